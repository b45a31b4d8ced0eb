"""`SweepResult`: every configuration's summary and RunRecord, lookup by configuration, JSON."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import RecordFormatError, UnknownConfigError
from ..io import json_text, read_json_file, write_atomic
from ..record import RunRecord
from .config import SweepConfig
from .summary import ConfigSummary, first_logged_loss

SWEEP_FORMAT = "gradscope-sweep"
SWEEP_FORMAT_VERSION = 2  # 2: summaries hold first_loss, options hold "inits" (a list)
READABLE_VERSIONS = (1, 2)


@dataclass
class SweepResult:
    summaries: list[ConfigSummary] = field(default_factory=list)  # in sweep order
    records: list[Optional[RunRecord]] = field(default_factory=list)  # parallel to summaries
    data_description: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # the sweep's arguments, for reports
    seconds: float = 0.0
    workers: int = 1

    @property
    def configs(self) -> list[SweepConfig]:
        return [s.config for s in self.summaries]

    @property
    def failures(self) -> list[ConfigSummary]:
        return [s for s in self.summaries if s.error]

    @property
    def inits(self) -> list[str]:
        """The inits this sweep ran, in sweep order."""
        return list(dict.fromkeys(s.config.init for s in self.summaries))

    def find(
        self, activation: str, depth: int, norm: str = "none", dropout: float = 0.0, init: Optional[str] = None
    ) -> RunRecord:
        """The RunRecord of one configuration (recorded by gradscope.watch while it trained).

        init may be left out when the sweep ran a single init."""
        index = self._index(activation, depth, norm, dropout, init)
        record = self.records[index]
        if record is None:
            raise UnknownConfigError(f"The sweep kept no record for {self.summaries[index].config.label_with_init}.")
        return record

    def summary(
        self, activation: str, depth: int, norm: str = "none", dropout: float = 0.0, init: Optional[str] = None
    ) -> ConfigSummary:
        return self.summaries[self._index(activation, depth, norm, dropout, init)]

    def _index(self, activation: str, depth: int, norm: str, dropout: float, init: Optional[str]) -> int:
        matches = [
            index for index, c in enumerate(self.configs)
            if (c.activation, c.depth, c.norm, c.dropout) == (activation, depth, norm, float(dropout))
            and init in (None, c.init)
        ]
        if len(matches) == 1:
            return matches[0]
        if matches:
            inits = [self.summaries[i].config.init for i in matches]
            raise UnknownConfigError(
                f"This sweep ran {self.summaries[matches[0]].config.label} at several inits ({', '.join(inits)}); "
                f"say which one, e.g. init={inits[-1]!r}."
            )
        ran = "; ".join(s.config.label_with_init for s in self.summaries) or "nothing"
        asked = f"activation={activation!r}, depth={depth!r}, norm={norm!r}, dropout={dropout!r}"
        raise UnknownConfigError(
            f"This sweep did not run {asked}{'' if init is None else f', init={init!r}'}. It ran: {ran}."
        )

    # ---- JSON -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SWEEP_FORMAT,
            "version": SWEEP_FORMAT_VERSION,
            "data": self.data_description,
            "options": self.options,
            "seconds": self.seconds,
            "workers": self.workers,
            "summaries": [s.to_dict() for s in self.summaries],
            "records": [r.to_dict() if r is not None else None for r in self.records],
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "the sweep data") -> "SweepResult":
        if not isinstance(data, dict) or data.get("format") != SWEEP_FORMAT:
            raise RecordFormatError(
                f"{source} is not a gradscope sweep result (no \"format\": \"{SWEEP_FORMAT}\" at the top level). "
                "Pass a file written by `gradscope sweep --json` or `SweepResult.save`."
            )
        if data.get("version") not in READABLE_VERSIONS:
            raise RecordFormatError(
                f"{source} is sweep format version {data.get('version')!r}; this gradscope reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}. Re-run the sweep with this version of gradscope."
            )
        try:
            summaries = [ConfigSummary.from_dict(s) for s in data["summaries"]]
            records = [
                RunRecord.from_dict(r, source=f"{source}, record {i}") if r is not None else None
                for i, r in enumerate(data["records"])
            ]
            if len(records) != len(summaries):
                raise ValueError("summaries and records differ in number")
            for summary, record in zip(summaries, records):
                if summary.first_loss is None and record is not None:  # version 1 did not store it
                    summary.first_loss = first_logged_loss(record)
            return cls(
                summaries=summaries,
                records=records,
                data_description=str(data["data"]),
                options=dict(data["options"]),
                seconds=float(data["seconds"]),
                workers=int(data["workers"]),
            )
        except RecordFormatError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RecordFormatError(
                f"{source} looks like a gradscope sweep result but its contents are damaged "
                f"({type(exc).__name__}: {exc}). Re-run `gradscope sweep --json`."
            ) from None

    def to_json(self) -> str:
        # Compact: a default sweep holds 15 full records.
        return json_text(self.to_dict(), compact=True)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically: a failure leaves no half-written file."""
        path = Path(path)
        write_atomic(path, self.to_json().encode("utf-8"))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "SweepResult":
        path = Path(path)
        data = read_json_file(path, "Sweep file", "Re-run `gradscope sweep --json`.")
        return cls.from_dict(data, source=f"Sweep file {str(path)!r}")
