"""`RunRecord`: what one watched training run produced, as plain dataclasses and JSON.

Statistics are stored column-wise: for every layer (or parameter) and statistic, one
`Column` with a value per recorded step, `None` where there was nothing to measure (no
gradient, a skipped step, a module that did not run). A column keeps its numbers in a numpy
array with a mask of "measured" (5 bytes a value, not a 32-byte Python float in a list), so a
long run fits in memory; `series()` still hands out plain lists. The JSON file stays small
and diffable; `gradscope.store` holds the on-disk form a watch can stream into.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from . import store
from .columns import Column, Value, column_arrays
from .errors import RecordFormatError, UnknownSeriesError
from .io import from_json_value, json_text, read_json_file, to_json_value, write_atomic
from .runinfo import HookError, ModuleInfo, RunMeta
from .statdefs import STAT_NAMES

SCHEMA_VERSION = 1

__all__ = ["Column", "HookError", "ModuleInfo", "RunMeta", "RunRecord", "SCHEMA_VERSION", "Value", "column_arrays"]


@dataclass
class RunRecord:
    meta: RunMeta = field(default_factory=RunMeta)
    modules: list[ModuleInfo] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)  # the recorded step indices
    skipped_steps: list[int] = field(default_factory=list)  # steps GradScaler skipped (non-finite grads)
    # budget=: the recording interval in force at each recorded step (one per step, as `steps`),
    # chosen from gradscope's measured cost; empty when every=N chose the steps (meta.every).
    intervals: list[int] = field(default_factory=list)
    layer_stats: dict[str, dict[str, Column]] = field(default_factory=dict)
    param_stats: dict[str, dict[str, Column]] = field(default_factory=dict)
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # run.log(...): (step, value)
    hook_errors: list[HookError] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    # ---- reading ----------------------------------------------------------------------
    @property
    def layers(self) -> list[str]:
        """Qualified module names in forward (execution) order."""
        return [m.name for m in self.modules]

    def module(self, name: str) -> ModuleInfo:
        for info in self.modules:
            if info.name == name:
                return info
        raise UnknownSeriesError(f"No module named {name!r} in this record. Known modules: {_preview(self.layers)}.")

    def series(self, stat: str, name: str) -> list[Value]:
        """One value per recorded step of `stat` for a module or a parameter (qualified name)."""
        if stat not in STAT_NAMES:
            raise UnknownSeriesError(f"Unknown statistic {stat!r}. Known statistics: {', '.join(STAT_NAMES)}.")
        table = self.layer_stats.get(name)
        if table is None:
            table = self.param_stats.get(name)
        if table is None:
            raise UnknownSeriesError(
                f"No layer or parameter named {name!r} in this record. "
                f"Layers: {_preview(self.layers)}; parameters: {_preview(list(self.param_stats))}."
            )
        values = table.get(stat)
        return list(values) if values is not None else [None] * len(self.steps)

    def last(self, stat: str, name: str) -> Value:
        """The value at the last recorded step that has one, or None."""
        values, measured = self.series_arrays(stat, name)
        present = np.flatnonzero(measured)
        return float(values[present[-1]]) if len(present) else None

    def step_array(self) -> np.ndarray:
        """`steps` as an int64 array, converted once rather than once per series read: a diagnosis
        reads thousands of series, and converting a 100,000-step list each time was most of its cost.
        Steps are only ever appended, so the cache is renewed when the list or its length changes."""
        cached = self.__dict__.get("_step_array_cache")
        if cached is None or cached[0] is not self.steps or len(cached[1]) != len(self.steps):
            cached = (self.steps, np.asarray(self.steps, dtype=np.int64))
            self.__dict__["_step_array_cache"] = cached
        return cached[1]

    def series_arrays(self, stat: str, name: str) -> tuple[np.ndarray, np.ndarray]:
        """`series` as (float64 values, NaN where not measured; measured mask): for long runs."""
        if stat not in STAT_NAMES:
            self.series(stat, name)  # raises the error that names the known statistics
        table = self.layer_stats.get(name)
        if table is None:
            table = self.param_stats.get(name)
        if table is None:
            self.series(stat, name)
        values = table.get(stat) if table is not None else None
        if values is None:
            return np.full(len(self.steps), np.nan), np.zeros(len(self.steps), bool)
        return column_arrays(values)

    def scalar_series(self, name: str) -> tuple[list[int], list[float]]:
        """(steps, values) of a scalar logged with `run.log(name=...)`."""
        if name not in self.scalars:
            known = ", ".join(sorted(self.scalars)) or "none were logged"
            raise UnknownSeriesError(f"No scalar {name!r} was logged. Logged scalars: {known}.")
        pairs = self.scalars[name]
        return [s for s, _ in pairs], [v for _, v in pairs]

    # ---- writing ------------------------------------------------------------------------
    def append_step(
        self,
        step: int,
        layer_values: dict[str, dict[str, Value]],
        param_values: dict[str, dict[str, Value]],
        skipped: bool = False,
        *,
        measured: bool = False,
        interval: Optional[int] = None,
    ) -> None:
        """Add one recorded step; names or statistics missing from the dicts read as None.

        `measured=True`: the values are statistics a watch reduced in float32 on the device;
        they are kept at that precision (`measured_precision`), as the run store keeps them.
        `interval`: the recording interval a budget had chosen (see `intervals`).
        """
        index = len(self.steps)
        self.steps.append(step)
        if skipped:
            self.skipped_steps.append(step)
        if interval is not None:
            self.intervals.append(interval)
        _append_column(self.layer_stats, layer_values, index, measured)
        _append_column(self.param_stats, param_values, index, measured)

    def log_scalar(self, step: int, name: str, value: float) -> None:
        pairs = self.scalars.setdefault(name, [])
        if pairs and pairs[-1][0] == step:
            pairs[-1] = (step, value)  # logged twice for one step (micro-batches): the last value wins
        else:
            pairs.append((step, value))

    # ---- JSON ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = {
            "meta": asdict(self.meta),
            "modules": [asdict(m) for m in self.modules],
            "steps": list(self.steps),
            "skipped_steps": list(self.skipped_steps),
            "intervals": list(self.intervals),
            "layer_stats": _tables_to_lists(self.layer_stats),
            "param_stats": _tables_to_lists(self.param_stats),
            "scalars": {k: [[s, v] for s, v in pairs] for k, pairs in self.scalars.items()},
            "hook_errors": [asdict(e) for e in self.hook_errors],
            "schema_version": self.schema_version,
        }
        return to_json_value(data)

    @classmethod
    def from_dict(cls, data: Any, source: str = "the run data") -> "RunRecord":
        if isinstance(data, dict) and isinstance(data.get("networks"), dict) and "schema_version" not in data:
            raise RecordFormatError(
                f"{source} holds the records of several networks ({', '.join(map(str, data['networks']))}), one per "
                "optimizer, as `gradscope analyze --json` writes them for a GAN, but one run was expected. "
                "`gradscope report` shows every network; to read one, take its entry: "
                "RunRecord.from_dict(data['networks'][name])."
            )
        if not isinstance(data, dict) or "schema_version" not in data:
            raise RecordFormatError(
                f"{source} is not a gradscope run record (no 'schema_version' at the top level). "
                "Pass a file written by `RunRecord.save` or `gradscope analyze --json`."
            )
        version = data["schema_version"]
        if version != SCHEMA_VERSION:
            raise RecordFormatError(
                f"{source} uses run-record schema version {version!r}, but this gradscope reads version "
                f"{SCHEMA_VERSION}. Re-create the run with this version of gradscope, or install the gradscope "
                "version that wrote it."
            )
        try:
            record = cls(
                meta=RunMeta(**data["meta"]),
                modules=[ModuleInfo(**m) for m in data["modules"]],
                steps=[int(s) for s in data["steps"]],
                skipped_steps=[int(s) for s in data["skipped_steps"]],
                intervals=[int(n) for n in data.get("intervals", [])],  # absent before budget= existed
                layer_stats=_tables_from_lists(from_json_value(data["layer_stats"])),
                param_stats=_tables_from_lists(from_json_value(data["param_stats"])),
                scalars={k: [(int(s), from_json_value(v)) for s, v in pairs] for k, pairs in data["scalars"].items()},
                hook_errors=[HookError(**e) for e in data["hook_errors"]],
                schema_version=version,
            )
            record._validate()
        except RecordFormatError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RecordFormatError(
                f"{source} looks like a gradscope run record but its contents are damaged "
                f"({type(exc).__name__}: {exc}). Re-create it with `gradscope analyze --json` or `RunRecord.save`."
            ) from None
        return record

    def _validate(self) -> None:
        n = len(self.steps)
        if self.intervals and len(self.intervals) != n:
            raise ValueError(f"{len(self.intervals)} recording intervals for {n} recorded steps")
        for table in (self.layer_stats, self.param_stats):
            for name, stats in table.items():
                for stat, values in stats.items():
                    if not isinstance(values, (Column, list)) or len(values) != n:
                        raise ValueError(f"series {stat!r} of {name!r} has the wrong length")

    def to_json(self) -> str:
        return json_text(self.to_dict())

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the record atomically (a failure leaves no half-written file): as a run store
        when the path ends in `.gsrun`, else as JSON."""
        path = Path(path)
        if path.suffix == store.STORE_SUFFIX:
            store.write_store(self, path)
            return path
        write_atomic(path, self.to_json().encode("utf-8"))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "RunRecord":
        """Read a run saved as JSON or a run store (told apart by content, not by name). A store
        may still be written by a running watch, or its writer may have been killed: the record
        holds every step committed so far."""
        path = Path(path)
        if store.is_store_file(path):
            return cls(**store.read_store(path))
        data = read_json_file(path, "Run file", "Re-create it with `gradscope analyze --json`.")
        return cls.from_dict(data, source=f"Run file {str(path)!r}")


def _append_column(
    table: dict[str, dict[str, Column]], values: dict[str, dict[str, Value]], index: int, measured: bool
) -> None:
    for name, stats in values.items():
        columns = table.setdefault(name, {})
        for stat in stats:
            if stat not in columns:
                columns[stat] = Column.unmeasured(index)
    for name, columns in table.items():
        row = values.get(name, {})
        for stat, column in columns.items():
            if measured:
                column.append_measured(row.get(stat))
            else:
                column.append(row.get(stat))


def _tables_to_lists(table: dict[str, dict[str, Any]]) -> dict[str, dict[str, list[Value]]]:
    return {name: {stat: list(values) for stat, values in stats.items()} for name, stats in table.items()}


def _tables_from_lists(table: dict[str, dict[str, list[Value]]]) -> dict[str, dict[str, Column]]:
    return {name: {stat: Column(values) for stat, values in stats.items()} for name, stats in table.items()}


def _preview(names: Iterable[str], limit: int = 8) -> str:
    names = list(names)
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "") if names else "none"
