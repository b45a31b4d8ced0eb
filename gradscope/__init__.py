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
from .fixes import FixTrial, try_fixes
from .record import RunRecord
from .sweep import sweep
from .version import __version__

__all__ = [
    "Diagnosis",
    "Finding",
    "FixTrial",
    "GradscopeError",
    "RunRecord",
    "Watcher",
    "diagnose",
    "load_config",
    "report",
    "sweep",
    "try_fixes",
    "watch",
    "__version__",
]
