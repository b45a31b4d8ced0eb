"""Gradient clipping as a record shows it: the norms before clipping, and how often clipping acted.

Trainers clip by default (Hugging Face at max_grad_norm=1.0, Lightning with gradient_clip_val),
so the gradients the optimizer used can look healthy while the network explodes. Rules that
judge the size of gradients read the norms from before clipping when the record has them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from ..record import RunRecord
from .reading import has_stat, points, weight_layers

PRECLIP = "grad_norm_preclip"
# A step whose total gradient the optimizer used is below this fraction of the pre-clip total was clipped
# (1 - 1e-3: rounding in unscaling AMP gradients stays far above it).
CLIPPED_BELOW = 0.999


def gradient_norm_stat(record: RunRecord) -> str:
    """The statistic holding a layer's gradient norm before clipping: grad_norm_preclip when usable."""
    return PRECLIP if clipping(record) is not None else "grad_norm"


def _pure_unscaling(factors: list[float]) -> bool:
    """Every step's factor an exact power of two below 1: GradScaler.unscale_ alone, with a scaler
    watch() was not told about, so the norms before it are of the scaled loss (x65536 at first)."""
    return all(0 < f <= 0.5 and abs(math.log2(f) - round(math.log2(f))) < 1e-6 for f in factors)


@dataclass
class Clipping:
    """How often clipping acted over the recorded steps that have both norms."""

    steps: list[int]  # recorded steps with both totals
    clipped: list[int]  # of those, the steps clipping scaled down
    smallest_factor: float  # the strongest clipping seen (total used / total before clipping)

    @property
    def fraction(self) -> float:
        return len(self.clipped) / len(self.steps) if self.steps else 0.0

    def describe(self) -> str:
        return (
            f"clipping active on {self.fraction:.0%} of steps ({len(self.clipped)} of {len(self.steps)} recorded; "
            f"it scaled the gradient down to as little as {self.smallest_factor:.2g} of its norm)"
        )

    def evidence(self) -> dict[str, float]:
        return {"clipping_active_frac": self.fraction, "clip_factor_min": self.smallest_factor}


def clipping(record: RunRecord) -> Optional[Clipping]:
    """Per recorded step, the total gradient norm the optimizer used against the one before clipping."""
    if not has_stat(record, PRECLIP):
        return None
    layers = weight_layers(record)
    before, used = _totals(record, PRECLIP, layers), _totals(record, "grad_norm", layers)
    factors = {step: used[step] / before[step] for step in before if step in used and before[step] > 0}
    if not factors or (not record.meta.options.get("scaler") and _pure_unscaling(list(factors.values()))):
        return None
    steps = sorted(factors)
    return Clipping(
        steps=steps,
        clipped=[s for s in steps if factors[s] < CLIPPED_BELOW],
        smallest_factor=min(factors.values()),
    )


def _totals(record: RunRecord, stat: str, layers: list) -> dict[int, float]:
    squares: dict[int, float] = {}
    for info in layers:
        for step, value in points(record, stat, info.name):
            squares[step] = squares.get(step, 0.0) + value * value
    return {step: math.sqrt(total) for step, total in squares.items()}
