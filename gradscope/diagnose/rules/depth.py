"""Per-layer profiles of a gradient statistic along depth, shared by the vanishing and exploding rules."""

from __future__ import annotations

from dataclasses import dataclass

from ...decay import decay_per_layer, first_last_ratio
from ...record import RunRecord
from ..reading import median_of, weight_layers

# The backward signal itself first; the gradient RMS of the weights second.
PROFILE_STATS = ("backprop_norm", "grad_rms")


@dataclass
class DepthProfile:
    """One statistic's median value at each weight layer that has it, in forward order."""

    stat: str
    names: list[str]
    values: list[float]

    @property
    def first_last_ratio(self) -> float:
        """Value at the first (input-side) layer over the value at the last (output-side) one."""
        return first_last_ratio(self.values)  # type: ignore[return-value]  # values are positive: never None

    @property
    def per_layer_factor(self) -> float:
        """Fitted factor per layer from the output towards the input (< 1: shrinking)."""
        return decay_per_layer(self.values)  # type: ignore[return-value]  # two or more positive values

    @property
    def what(self) -> str:
        return "backward signal ||dL/d output||" if self.stat == "backprop_norm" else "gradient RMS"

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.names, self.values))


def depth_profiles(record: RunRecord, min_layers: int) -> list[DepthProfile]:
    """Profiles of the statistics in PROFILE_STATS with at least `min_layers` positive values."""
    # A module that never ran itself (MultiheadAttention's out_proj is used through its weight) has no
    # place in the forward order, so it cannot sit on a depth axis.
    layers = [m for m in weight_layers(record) if m.executed]
    profiles = []
    for stat in PROFILE_STATS:
        pairs = [(m.name, median_of(record, stat, m.name)) for m in layers]
        pairs = [(name, value) for name, value in pairs if value is not None and value > 0]
        if len(pairs) >= max(2, min_layers):
            profiles.append(DepthProfile(stat, [n for n, _ in pairs], [v for _, v in pairs]))
    return profiles
