"""One run per network, for a loop that trains several (a GAN's generator and discriminator).

Each network trained by its own optimizer is watched by its own watcher, so it has its own
RunRecord, step numbers and findings. `NetworkRun` carries one of them from `gradscope analyze`
(which fills `name` and `record`) through the diagnosis (`diagnosis`) to the reports, which show
each network under its own heading. A model trained by one optimizer is one `NetworkRun`, and
the reports render it exactly as a lone record.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from . import store
from .diagnose.finding import Diagnosis
from .errors import RecordFormatError
from .io import read_json_file
from .record import RunRecord

# The top-level key of a JSON document holding several networks' records (outputs.networks_json).
NETWORKS_KEY = "networks"


@dataclass
class NetworkRun:
    name: str  # "generator": the submodule's attribute path, or make_optimizer's dict key
    record: RunRecord
    diagnosis: Optional[Diagnosis] = None


def network_names(runs: Sequence[NetworkRun]) -> str:
    """"generator, discriminator": for headings and messages."""
    return ", ".join(run.name for run in runs)


def file_safe(name: str) -> str:
    """A network's name as part of a file name: letters, digits, `_`, `-` and `.` only."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip(".") or "network"


def load_runs(path: str | os.PathLike[str]) -> list[NetworkRun]:
    """A saved run as `NetworkRun`s: one for a run store or a record's JSON, one per network for
    the JSON `gradscope analyze --json` writes when several networks were trained."""
    path = Path(path)
    if store.is_store_file(path):
        return [NetworkRun("model", RunRecord.load(path))]
    data = read_json_file(path, "Run file", "Re-create it with `gradscope analyze --json`.")
    networks = data.get(NETWORKS_KEY) if isinstance(data, dict) and "schema_version" not in data else None
    if networks is None:
        return [NetworkRun("model", RunRecord.from_dict(data, source=f"Run file {str(path)!r}"))]
    if not isinstance(networks, dict) or not networks:
        raise RecordFormatError(
            f"Run file {str(path)!r} has a {NETWORKS_KEY!r} entry that is not a non-empty mapping of network names "
            "to run records. Re-create it with `gradscope analyze --json`."
        )
    return [
        NetworkRun(str(name), RunRecord.from_dict(value, source=f"Network {name!r} of run file {str(path)!r}"))
        for name, value in networks.items()
    ]
