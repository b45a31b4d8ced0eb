"""Reducing a per-step statistic to the one number a figure point or a table cell shows.

Figures and the per-layer table summarise a series the same way (the median of its finite
values over the recorded steps), so a number in the table is the height of the matching
point in a figure.
"""

from __future__ import annotations

import math
import statistics
from typing import Iterable, Sequence

from ..record import RunRecord, Value

SUMMARY_DESCRIPTION = "median over the recorded steps"


def finite(values: Iterable[Value]) -> list[float]:
    """The values that are numbers, dropping None, NaN and infinities."""
    return [v for v in values if v is not None and math.isfinite(v)]


def median(values: Iterable[Value]) -> Value:
    """Median of the finite values; None when there is none."""
    numbers = finite(values)
    return statistics.median(numbers) if numbers else None


def has_nonfinite(values: Iterable[Value]) -> bool:
    return any(v is not None and not math.isfinite(v) for v in values)


def stat_values(record: RunRecord, table: str, name: str, stat: str) -> list[Value]:
    """One layer's (table="layer") or parameter's (table="param") series; all None when never recorded.

    Unlike `RunRecord.series`, an absent series is not an error: a report shows what exists.
    """
    source = record.layer_stats if table == "layer" else record.param_stats
    values = source.get(name, {}).get(stat)
    return list(values) if values is not None else [None] * len(record.steps)


def layer_median(record: RunRecord, name: str, stat: str) -> Value:
    return median(stat_values(record, "layer", name, stat))


def layers_with(record: RunRecord, stats: Sequence[str]) -> list[str]:
    """Layers (forward order) holding at least one finite value of any of `stats`."""
    return [
        name
        for name in record.layers
        if any(finite(stat_values(record, "layer", name, stat)) for stat in stats)
    ]


def display_name(name: str) -> str:
    """The root module's qualified name is empty; show it as something a reader can see."""
    return name if name else "(root)"
