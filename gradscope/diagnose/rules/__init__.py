"""The diagnosis rules, in the order their findings are listed within one severity."""

from __future__ import annotations

from ..rule import Rule
from .amp_overflow import AmpOverflow
from .batchnorm import BatchNormPitfalls
from .dead_relu import DeadRelu
from .exploding import ExplodingGradients
from .hook_errors import HookErrors
from .no_gradient import NoGradient
from .nonfinite import NonFinite
from .overfitting import Overfitting
from .saturation import Saturation
from .update_ratio import UpdateRatio
from .vanishing import VanishingGradients

ALL_RULES: tuple[Rule, ...] = (
    NonFinite(),
    ExplodingGradients(),
    VanishingGradients(),
    DeadRelu(),
    Saturation(),
    BatchNormPitfalls(),
    UpdateRatio(),
    Overfitting(),
    AmpOverflow(),
    NoGradient(),
    HookErrors(),
)

__all__ = ["ALL_RULES", "Rule"]
