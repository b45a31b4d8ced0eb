"""Optional dependencies: import a framework only when its bridge is used, or say how to install it.

`import gradscope` must stay as light as torch itself, so Lightning, transformers, TensorBoard
and wandb are imported inside the functions that need them, through `require`, and a missing
one is a one-line error naming the extra that installs it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import GradscopeError

DISTRIBUTION = "torch-gradscope"  # the name on PyPI; the import name and the command are `gradscope`


class MissingExtraError(GradscopeError, ImportError):
    """An optional framework (Lightning, transformers, TensorBoard, wandb) is not installed."""


def require(module: str, extra: str) -> ModuleType:
    """Import `module`, or raise a MissingExtraError that names `pip install torch-gradscope[extra]`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        raise MissingExtraError(
            f"This gradscope feature needs `{top}`, which is not installed ({exc}); "
            f'install it with: pip install "{DISTRIBUTION}[{extra}]"'
        ) from None
