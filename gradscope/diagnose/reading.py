"""Reading a RunRecord the way the rules need it: per-layer summaries over the recorded steps.

Gradient-side values of steps that GradScaler skipped are left out everywhere: on those steps
the gradients were scaled up until they overflowed on purpose, and the optimizer never used
them, so they say nothing about the model.
"""

from __future__ import annotations

import math
from statistics import median
from typing import Iterable, Optional

from ..record import ModuleInfo, RunRecord
from ..statdefs import STATS_BY_NAME

_SKIPPABLE_SOURCES = ("gradient", "update", "backprop")


def has_stat(record: RunRecord, stat: str) -> bool:
    """True when some layer or parameter has at least one recorded value of `stat`."""
    for table in (record.layer_stats, record.param_stats):
        for stats in table.values():
            if any(v is not None for v in stats.get(stat, ())):
                return True
    return False


def has_scalar(record: RunRecord, name: str) -> bool:
    return bool(record.scalars.get(name))


def points(record: RunRecord, stat: str, name: str, finite_only: bool = True) -> list[tuple[int, float]]:
    """(step, value) pairs of `stat` for a layer or parameter, without gaps and skipped steps."""
    table = record.layer_stats.get(name) or record.param_stats.get(name) or {}
    values = table.get(stat)
    if not values:
        return []
    skipped = set(record.skipped_steps) if STATS_BY_NAME[stat].source in _SKIPPABLE_SOURCES else set()
    out = []
    for step, value in zip(record.steps, values):
        if value is None or step in skipped or (finite_only and not math.isfinite(value)):
            continue
        out.append((step, float(value)))
    return out


def median_of(record: RunRecord, stat: str, name: str) -> Optional[float]:
    values = [v for _, v in points(record, stat, name)]
    return median(values) if values else None


def smallest_of_last(record: RunRecord, stat: str, name: str, count: int) -> Optional[float]:
    """The smallest of the last `count` values: a level the layer stayed above in every one of them."""
    values = [v for _, v in points(record, stat, name)][-max(1, count):]
    return min(values) if values else None


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
