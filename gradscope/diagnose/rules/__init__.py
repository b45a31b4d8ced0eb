"""The diagnosis rules, in the order their findings are listed within one severity.

To add a rule: write a `Rule` subclass in its own module here (declare `needs` and
`config_keys`, return Findings from `check`), give it a section in ../defaults.yaml with every
key commented, and list it below. tests/diagnose/test_config.py checks that the section and
`config_keys` agree.
"""

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
