"""What to watch in a model: unwrapping, module selection, activation kinds, unit layout.

Pure inspection of the module tree; nothing here registers hooks or computes statistics.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import torch
from torch import nn

# isinstance order matters: ReLU6 is a Hardtanh, so the more specific classes come first.
_ACTIVATION_CLASSES: tuple[tuple[type, str], ...] = (
    (nn.ReLU6, "relu6"),
    (nn.ReLU, "relu"),
    (nn.LeakyReLU, "leaky_relu"),
    (nn.PReLU, "prelu"),
    (nn.RReLU, "rrelu"),
    (nn.ELU, "elu"),
    (nn.SELU, "selu"),
    (nn.CELU, "celu"),
    (nn.GELU, "gelu"),
    (nn.SiLU, "silu"),
    (nn.Mish, "mish"),
    (nn.Hardswish, "hardswish"),
    (nn.Softplus, "softplus"),
    (nn.Sigmoid, "sigmoid"),
    (nn.Tanh, "tanh"),
    (nn.Hardtanh, "hardtanh"),
    (nn.Hardsigmoid, "hardsigmoid"),
    (nn.Softsign, "softsign"),
)

# Modules whose output keeps the unit (channel) axis at dim 1: (N, C, *spatial).
_CHANNELS_FIRST: tuple[type, ...] = (
    nn.modules.conv._ConvNd,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
)
# Modules whose units are the last axis: (..., features).
_CHANNELS_LAST: tuple[type, ...] = (nn.Linear, nn.Bilinear, nn.LayerNorm, nn.Embedding, nn.MultiheadAttention)
if hasattr(nn, "RMSNorm"):
    _CHANNELS_LAST = _CHANNELS_LAST + (nn.RMSNorm,)

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's own model inside DDP/DataParallel/FSDP1 and torch.compile wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
        if isinstance(inner, nn.Module):
            model = inner
            continue
        if type(model).__name__ in {"DistributedDataParallel", "DataParallel", "FullyShardedDataParallel"}:
            inner = getattr(model, "module", None)
            if isinstance(inner, nn.Module):
                model = inner
                continue
        return model


def activation_kind(module: nn.Module) -> Optional[str]:
    for cls, kind in _ACTIVATION_CLASSES:
        if isinstance(module, cls):
            return kind
    # Custom activation modules (e.g. transformers' GELUActivation) are recognised by name.
    name = type(module).__name__.lower()
    for kind in ("gelu", "silu", "sigmoid", "tanh", "relu"):
        if name.endswith(kind) or name.startswith(kind) or name == f"{kind}activation":
            return kind
    return None


def is_weight_layer(module: nn.Module) -> bool:
    """A Linear or Conv layer: what reads an activation's output in almost every network."""
    return isinstance(module, (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd))


def unit_layout(module: nn.Module) -> Optional[str]:
    """'first' (units on dim 1), 'last' (units on the last dim), or None: follow the previous module."""
    if isinstance(module, _CHANNELS_FIRST):
        return "first"
    if isinstance(module, _CHANNELS_LAST):
        return "last"
    return None


def saturation_counter(module: nn.Module, kind: Optional[str]) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    """A function counting, per row (dim 0) of a tensor, the entries in the flat region (see
    statdefs.SATURATION_THRESHOLDS). The same function for every module with the same region,
    so the samples of several layers can be counted in one go.

    Written with float ops (sign of a ReLU'd distance) rather than comparisons: on a CPU a
    boolean count is an order of magnitude slower than a vectorised float reduction.
    """
    if kind in ("hardsigmoid", "hardtanh"):
        # The output is clamped to [low, high], so it sits exactly on a bound when flat.
        low, high = (0.0, 1.0) if kind == "hardsigmoid" else (float(module.min_val), float(module.max_val))
        return _clamped_counter(low, high)
    return _SMOOTH_COUNTERS.get(kind) if kind is not None else None


def _count_rows(flags: torch.Tensor) -> torch.Tensor:
    """Nonzero entries of each row (dim 0) of a fresh tensor, as float32."""
    return flags.sign_().flatten(1).sum(1, dtype=torch.float32)


_SMOOTH_COUNTERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": lambda y: _count_rows((y - 0.5).abs_().sub_(0.49).relu_()),
    "tanh": lambda y: _count_rows(y.abs().sub_(0.99).relu_()),
    "softsign": lambda y: _count_rows(y.abs().sub_(0.9).relu_()),
}


@functools.lru_cache(maxsize=64)
def _clamped_counter(low: float, high: float) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda y: y[0].numel() - _count_rows((y - low).mul_(high - y).abs_())


@dataclass
class WatchedModule:
    """How one module of the user's model is watched."""

    name: str
    module: nn.Module
    activation: Optional[str]
    layout: Optional[str]
    params: list[tuple[str, nn.Parameter]]  # owned directly, qualified names
    watch_output: bool  # activation / backprop statistics
    is_leaf: bool


def select_modules(
    model: nn.Module,
    include: Optional[str | Iterable[str]] = None,
    exclude: Optional[str | Iterable[str]] = None,
) -> list[WatchedModule]:
    """Modules that own parameters directly, plus leaf modules (their outputs are activations).

    Plain containers (Sequential, ModuleList, ModuleDict) are skipped: their output is their
    last child's. `include`/`exclude` are regexes searched in the qualified module name.
    """
    includes = _compile(include)
    excludes = _compile(exclude)
    seen_params: set[int] = set()
    watched = []
    for name, module in model.named_modules():
        if includes and not any(p.search(name) for p in includes):
            continue
        if any(p.search(name) for p in excludes):
            continue
        is_leaf = next(iter(module.children()), None) is None
        params = []
        for pname, param in module.named_parameters(recurse=False):
            if id(param) in seen_params:  # tied weights are reported once, by their first owner
                continue
            seen_params.add(id(param))
            params.append((f"{name}.{pname}" if name else pname, param))
        if not params and (not is_leaf or isinstance(module, _CONTAINERS)):
            continue
        if not params and module is model and not is_leaf:
            continue
        kind = activation_kind(module)
        watched.append(
            WatchedModule(
                name=name,
                module=module,
                activation=kind,
                layout=unit_layout(module),
                params=params,
                watch_output=is_leaf or bool(params),
                is_leaf=is_leaf,
            )
        )
    return watched


def _compile(patterns: Optional[str | Iterable[str]]) -> list[re.Pattern[str]]:
    if patterns is None:
        return []
    if isinstance(patterns, str):
        patterns = [patterns]
    return [re.compile(p) for p in patterns]
