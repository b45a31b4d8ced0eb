"""Reading a RunRecord the way the rules need it: per-layer summaries over the recorded steps.

Gradient-side values of steps that GradScaler skipped are left out everywhere: on those steps
the gradients were scaled up until they overflowed on purpose, and the optimizer never used
them, so they say nothing about the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import median
from typing import Iterable, Optional

import numpy as np

from ..columns import column_arrays
from ..record import ModuleInfo, RunRecord
from ..statdefs import STATS_BY_NAME
from .numbers import compact

_SKIPPABLE_SOURCES = ("gradient", "update", "backprop")


def has_stat(record: RunRecord, stat: str) -> bool:
    """True when some layer or parameter has at least one recorded value of `stat`."""
    for table in (record.layer_stats, record.param_stats):
        for stats in table.values():
            values = stats.get(stat)
            if values is not None and column_arrays(values)[1].any():
                return True
    return False


def has_scalar(record: RunRecord, name: str) -> bool:
    return bool(record.scalars.get(name))


def points(record: RunRecord, stat: str, name: str, finite_only: bool = True) -> list[tuple[int, float]]:
    """(step, value) pairs of `stat` for a layer or parameter, without gaps and skipped steps."""
    steps, values = point_arrays(record, stat, name, finite_only)
    return list(zip(steps.tolist(), values.tolist()))


def point_arrays(record: RunRecord, stat: str, name: str, finite_only: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """`points` as two arrays (steps, values): a run of 100,000 steps is read in array operations."""
    table = record.layer_stats.get(name) or record.param_stats.get(name) or {}
    series = table.get(stat)
    if series is None or not len(series):
        return np.zeros(0, np.int64), np.zeros(0)
    values, keep = column_arrays(series)
    steps = record.step_array()
    if finite_only:
        keep = keep & np.isfinite(values)
    if record.skipped_steps and STATS_BY_NAME[stat].source in _SKIPPABLE_SOURCES:
        keep = keep & ~np.isin(steps, np.asarray(record.skipped_steps, dtype=np.int64))
    return steps[keep], values[keep]


def median_of(record: RunRecord, stat: str, name: str) -> Optional[float]:
    values = point_arrays(record, stat, name)[1]
    return float(np.median(values)) if len(values) else None


def smallest_of_last(record: RunRecord, stat: str, name: str, count: int) -> Optional[float]:
    """The smallest of the last `count` values: a level the layer stayed above in every one of them."""
    values = point_arrays(record, stat, name)[1][-max(1, count):]
    return float(values.min()) if len(values) else None


# The dead_relu rule's default `last_steps`: a unit counts as dead only if it stayed silent in each
# of these last recorded windows.
DEAD_UNIT_WINDOW = 3
SUMMARY_DESCRIPTION = f"medians over the recorded steps (dead: the smallest of the last {DEAD_UNIT_WINDOW})"


def layer_summary(record: RunRecord, stat: str, name: str) -> Optional[float]:
    """The one number per layer and statistic that report tables show and findings quote (see
    SUMMARY_DESCRIPTION); steps GradScaler skipped are left out of the gradient statistics."""
    if stat not in STATS_BY_NAME:
        return None
    if stat == "act_dead_frac":
        return smallest_of_last(record, stat, name, DEAD_UNIT_WINDOW)
    return median_of(record, stat, name)


def is_functional(info: ModuleInfo) -> bool:
    """An activation the model calls as a function (F.relu, torch.tanh), recorded where a Linear/Conv
    reads it; its name says which layer feeds it ("fc1→relu")."""
    return info.num_params == 0 and info.type.startswith("F.")


def is_norm(info: ModuleInfo) -> bool:
    return "Norm" in info.type


def is_batchnorm(info: ModuleInfo) -> bool:
    return info.type.startswith(("BatchNorm", "SyncBatchNorm", "LazyBatchNorm"))


def is_linear_or_conv(info: ModuleInfo) -> bool:
    return info.type.endswith("Linear") or info.type.startswith(("Conv", "LazyConv"))


def weight_layers(record: RunRecord) -> list[ModuleInfo]:
    """Modules that own parameters and transform features (norm layers excluded), forward order.

    These are the "layers" counted when a rule talks about depth.
    """
    return [m for m in record.modules if m.num_params > 0 and not is_norm(m)]


def hidden_modules(record: RunRecord) -> list[ModuleInfo]:
    """Modules before the last one that owns parameters: an activation after it shapes the output
    (a classifier's final sigmoid), and saturating there can be the goal."""
    owning = [i for i, m in enumerate(record.modules) if m.num_params > 0]
    return record.modules[: owning[-1]] if owning else list(record.modules)


def module_expr(name: str, root: str = "model") -> str:
    """Python code reaching a module from the model: "layers.0.fc" -> "model.layers[0].fc"."""
    code = root
    for part in name.split(".") if name else []:
        code += f"[{part}]" if part.isdigit() else f".{part}" if part.isidentifier() else f".get_submodule({part!r})"
    return code


def activation_modules(record: RunRecord, kinds: Iterable[str]) -> list[ModuleInfo]:
    kinds = set(kinds)
    return [m for m in record.modules if m.activation in kinds]


# Optimizers whose step divides the gradient by a running measure of its own size (or takes its
# sign), so multiplying the loss by a constant leaves their steps unchanged: with them a large
# gradient norm (a loss summed over the batch) is no sign of trouble by itself.
SCALE_FREE_OPTIMIZERS = frozenset(
    {"Adam", "AdamW", "Adamax", "NAdam", "RAdam", "SparseAdam", "Adagrad", "Adadelta", "RMSprop", "Rprop",
     "Adafactor", "Lion", "LAMB", "Lamb", "FusedAdam", "FusedLAMB", "DeepSpeedCPUAdam", "Adam8bit", "AdamW8bit"}
)
SCALE_SENSITIVE_OPTIMIZERS = frozenset({"SGD", "ASGD", "LBFGS"})


def optimizer_is_scale_free(record: RunRecord) -> Optional[bool]:
    """True for Adam-like optimizers, False for SGD-like ones, None when unknown (or several kinds)."""
    names = {n.strip().rsplit(".", 1)[-1] for n in (record.meta.optimizer or "").split(",") if n.strip()}
    if names and names <= SCALE_FREE_OPTIMIZERS:
        return True
    if names and names <= SCALE_SENSITIVE_OPTIMIZERS:
        return False
    return None


@dataclass(frozen=True)
class LossTrend:
    """The logged training loss at the start and at the end of the run."""

    first: float  # the first logged value
    late: float  # median of the last quarter of the logged values
    finite: bool  # every logged value was finite

    def rose(self, fraction: float) -> bool:
        """Non-finite, or the end of the run more than `fraction` of |first| above the start."""
        return not self.finite or self.late - self.first > fraction * abs(self.first)

    @property
    def fell(self) -> bool:
        """Finite throughout and lower at the end than at the start."""
        return self.finite and self.late < self.first

    def describe(self) -> str:
        if not self.finite:
            return "the loss became NaN/Inf"
        direction = "fell" if self.fell else "rose" if self.late > self.first else "stayed"
        return f"the loss {direction} from {compact(self.first)} to {compact(self.late)}"


def loss_trend(record: RunRecord, name: str = "loss") -> Optional[LossTrend]:
    """The trend of a logged scalar, or None when fewer than two values were logged."""
    values = [v for _, v in record.scalars.get(name, ())]
    if len(values) < 2:
        return None
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < len(values) or not finite:
        return LossTrend(first=values[0], late=math.nan, finite=False)
    late = median(finite[-max(1, len(finite) // 4):])
    return LossTrend(first=finite[0], late=late, finite=True)
