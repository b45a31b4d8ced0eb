"""How a signal changes along depth: the first/last ratio and the fitted factor per layer.

The vanishing and exploding rules, the depth sweep and `compare` all ask the same two
questions of one number per layer (in forward order, input side first): how much smaller is
it at the first layer than at the last, and by what factor does it shrink per layer on the
way back? They differ only in what they pass in:

* the diagnosis passes each layer's median over the recorded steps and leaves out layers
  without a positive value *before* calling, so the fit spans the layers that have one;
* the sweep passes every hidden layer's value at one step, missing or not: a missing or
  non-finite value gives None (no number rather than a bent one), and a layer whose signal
  underflowed float32 to exactly 0 is left out of the fit but keeps its place in the depth
  count, so the layers beyond it are as far from the output as they really are;
* `compare` passes the last recorded values of the layers that have a finite one.
"""

from __future__ import annotations

import math
from typing import Sequence

from .record import Value


def first_last_ratio(values: Sequence[Value]) -> Value:
    """The first (input-side) value over the last (output-side) one; tiny: the signal vanishes.

    None when either end is missing or the last is 0.
    """
    if not values or values[0] is None or values[-1] is None or values[-1] == 0:
        return None
    return float(values[0] / values[-1])


def decay_per_layer(values: Sequence[Value]) -> Value:
    """The factor by which the values shrink per layer, going from the output towards the input.

    exp of the least-squares slope of log(value) against the layer's distance from the output
    (the last layer is 0). 0.25: each layer has a quarter of the value of the layer after it
    (vanishing); 1: no decay; 4: exploding. Zeros are left out but keep their distance (see the
    module docstring); None when a value is missing or not finite, or fewer than two are positive.
    """
    if any(v is None or not math.isfinite(v) for v in values):
        return None
    pairs = [(distance, math.log(v)) for distance, v in enumerate(reversed(values)) if v > 0]  # type: ignore[operator]
    if len(pairs) < 2:
        return None
    n = len(pairs)
    mean_x = sum(x for x, _ in pairs) / n
    mean_y = sum(y for _, y in pairs) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in pairs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in pairs)
    return math.exp(sxy / sxx)
