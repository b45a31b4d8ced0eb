"""gradscope: why won't my network train? Per-layer gradient-flow diagnostics for PyTorch.

    with gradscope.watch(model, optimizer=opt) as run:
        ...  # the user's own training loop
    record = run.record
"""

from __future__ import annotations

from . import report
from .capture import Watcher, watch
from .diagnose import Diagnosis, Finding, diagnose, load_config
from .errors import GradscopeError
from .record import RunRecord
from .sweep import sweep
from .version import __version__

__all__ = [
    "Diagnosis",
    "Finding",
    "GradscopeError",
    "RunRecord",
    "Watcher",
    "diagnose",
    "load_config",
    "report",
    "sweep",
    "watch",
    "__version__",
]
