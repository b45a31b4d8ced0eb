"""What a sweep varies (`SweepConfig`, one trained network) and checks of the user's choices."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Optional

from ..errors import SweepOptionError
from .networks import ACTIVATIONS, INITS, NORMS

# Plain SGD stalls on the bundled task in 100 steps even where gradients flow; momentum lets the
# shallow networks learn, so "does not train" in a sweep means the gradient, not the optimizer.
MOMENTUM = 0.9


@dataclass(frozen=True)
class SweepConfig:
    """One network of the sweep and how it is trained (SGD, momentum 0.9, full batch)."""

    activation: str
    depth: int
    width: int = 64
    norm: str = "none"
    dropout: float = 0.0
    init: str = "default"
    steps: int = 100
    lr: float = 0.1
    seed: int = 0

    @property
    def key(self) -> tuple[str, int, str, float, str]:
        """What distinguishes configurations within one sweep."""
        return (self.activation, self.depth, self.norm, float(self.dropout), self.init)

    @property
    def label(self) -> str:
        parts = [self.activation, f"depth {self.depth}"]
        if self.norm != "none":
            parts.append(self.norm)
        if self.dropout:
            parts.append(f"dropout {self.dropout:g}")
        return ", ".join(parts)

    @property
    def label_with_init(self) -> str:
        """The label naming the init too, for sweeps that ran several."""
        return f"{self.label}, {self.init} init"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SweepConfig":
        return cls(**data)


def make_configs(
    activations: Iterable[str],
    depths: Iterable[int],
    width: int,
    norms: Iterable[str],
    dropouts: Iterable[float],
    inits: Iterable[str],
    steps: int,
    lr: float,
    seed: int,
) -> list[SweepConfig]:
    """Every combination, activation-major and init innermost (so a network's two inits sit side
    by side), after checking each choice."""
    activations = _unique(_check_names("activation", activations, tuple(ACTIVATIONS)))
    norms = _unique(_check_names("norm", norms, NORMS))
    depths = _unique(_check_ints("depth", depths, minimum=1))
    dropouts = _unique(_check_dropouts(dropouts))
    inits = _unique(_check_names("init", inits, INITS))
    (width,) = _check_ints("width", [width], minimum=1)
    (steps,) = _check_ints("steps", [steps], minimum=1)
    (seed,) = _check_ints("seed", [seed], minimum=0)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise SweepOptionError(f"lr must be a positive number (the SGD learning rate), got {lr!r}. Try 0.1.")
    return [
        SweepConfig(activation, depth, width, norm, dropout, init, steps, float(lr), seed)
        for activation in activations
        for depth in depths
        for norm in norms
        for dropout in dropouts
        for init in inits
    ]


def check_workers(workers: Optional[int]) -> Optional[int]:
    if workers is None:
        return None
    return _check_ints("workers", [workers], minimum=1)[0]


def _check_names(what: str, values: Iterable[str], known: tuple[str, ...]) -> list[str]:
    values = _as_list(what, values)
    for value in values:
        if value not in known:
            raise SweepOptionError(f"Unknown {what} {value!r}. Choose from: {', '.join(known)}.")
    return values


def _check_ints(what: str, values: Iterable[int], minimum: int) -> list[int]:
    values = _as_list(what, values)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise SweepOptionError(f"Each {what} must be a whole number >= {minimum}, got {value!r}.")
    return values


def _check_dropouts(values: Iterable[float]) -> list[float]:
    values = _as_list("dropout", values)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise SweepOptionError(
                f"Each dropout must be a probability of zeroing a unit, 0 <= p < 1 (PyTorch's p, which is "
                f"1 - keep_prob), got {value!r}."
            )
    return [float(v) for v in values]


def _as_list(what: str, values: Any) -> list:
    if isinstance(values, (str, int, float)):
        values = [values]  # a single choice is a list of one
    values = list(values)
    if not values:
        raise SweepOptionError(f"Give at least one {what}.")
    return values


def _unique(values: list) -> list:
    return list(dict.fromkeys(values))
