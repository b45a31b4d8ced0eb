"""What describes a run besides its numbers: its metadata, module tree and hook errors.

Plain dataclasses shared by the in-memory record (`gradscope.record`) and the on-disk run
store (`gradscope.store`), which both build them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

# How the note that budget= writes into `RunMeta.notes` begins (reports show it beside the step range).
BUDGET_NOTE_START = "Overhead budget "

# Part of the note a watch writes when training steps ran their forward without any hook (a forward
# compiled with fullgraph=True, or before attach): how a reader of the record tells that it happened.
UNSEEN_FORWARD_MARK = "activation statistics (act_*) and backprop_norm are not recorded"


@dataclass
class ModuleInfo:
    """One watched module, in forward (execution) order."""

    name: str  # qualified name in the unwrapped model ("" is the root)
    type: str  # class name, e.g. "Linear"
    num_params: int  # parameters the module owns directly (not its children's)
    params: list[str] = field(default_factory=list)  # qualified names of those parameters
    trainable_params: int = 0  # of num_params, those with requires_grad
    activation: Optional[str] = None  # "sigmoid", "tanh", "relu", ... for activation modules
    is_leaf: bool = True
    executed: bool = True  # False: owns parameters but never ran a training forward


@dataclass
class RunMeta:
    model_class: str = ""
    num_params: int = 0
    trainable_params: int = 0
    grad_source: str = "optimizer"  # "optimizer": read at optimizer.step; "backward": after each backward
    optimizer: Optional[str] = None
    every: int = 1
    gradscope_version: str = ""
    torch_version: str = ""
    python_version: str = ""
    created: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # how the run was made (CLI options, sweep config)
    notes: list[str] = field(default_factory=list)  # e.g. statistics that were unavailable and why


@dataclass
class HookError:
    """An exception raised inside one of gradscope's own hooks. Training went on regardless."""

    where: str  # "forward:features.3", "optimizer-step", ...
    error: str  # "ValueError: ..."
    count: int = 1
    first_step: int = 0
