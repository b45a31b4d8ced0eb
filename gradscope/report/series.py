"""Reducing a per-step statistic to the one number a figure point or a table cell shows.

Figures and the per-layer table summarise a series the same way (the median of its finite
values over the recorded steps), so a number in the table is the height of the matching
point in a figure. Series are read as numpy arrays, so a run of 100,000 recorded steps is
summarised in array operations, not Python loops; curves and the layer x step heatmap are
downsampled to a bounded number of points (`downsample_curve`, `downsample_columns`).
"""

from __future__ import annotations

import math
import statistics
import warnings
from typing import Iterable, Sequence

import numpy as np

from ..columns import column_arrays
from ..record import RunRecord, Value

SUMMARY_DESCRIPTION = "median over the recorded steps"
MAX_CURVE_BUCKETS = 1000  # a curve keeps each bucket's min and max: at most 2,000 points
MAX_HEATMAP_COLUMNS = 1000  # more step columns than a figure has pixels say nothing more


def finite(values: Iterable[Value]) -> list[float]:
    """The values that are numbers, dropping None, NaN and infinities."""
    return [v for v in values if v is not None and math.isfinite(v)]


def median(values: Iterable[Value]) -> Value:
    """Median of the finite values; None when there is none."""
    numbers = finite(values)
    return statistics.median(numbers) if numbers else None


def has_nonfinite(values: Iterable[Value]) -> bool:
    return any(v is not None and not math.isfinite(v) for v in values)


def stat_array(record: RunRecord, table: str, name: str, stat: str) -> np.ndarray:
    """One layer's (table="layer") or parameter's (table="param") series as float64, NaN where not
    measured; all NaN when never recorded. Tell NaN from "not measured" with `stat_arrays`."""
    return stat_arrays(record, table, name, stat)[0]


def stat_arrays(record: RunRecord, table: str, name: str, stat: str) -> tuple[np.ndarray, np.ndarray]:
    """(values, measured mask) of a series; unlike `RunRecord.series`, an absent series is no
    error: a report shows what exists."""
    source = record.layer_stats if table == "layer" else record.param_stats
    values = source.get(name, {}).get(stat)
    if values is None:
        return np.full(len(record.steps), np.nan), np.zeros(len(record.steps), bool)
    return column_arrays(values)


def stat_values(record: RunRecord, table: str, name: str, stat: str) -> list[Value]:
    """`stat_arrays` as a list of floats and Nones."""
    values, measured = stat_arrays(record, table, name, stat)
    out = values.tolist()
    for index in np.flatnonzero(~measured).tolist():
        out[index] = None
    return out


def array_median(values: np.ndarray) -> Value:
    """Median of the finite entries (the same number `median` gives for the list); None if none."""
    numbers = values[np.isfinite(values)]
    return float(np.median(numbers)) if len(numbers) else None


def array_has_nonfinite(values: np.ndarray, measured: np.ndarray) -> bool:
    return bool(np.any(measured & ~np.isfinite(values)))


def layer_median(record: RunRecord, name: str, stat: str) -> Value:
    return array_median(stat_array(record, "layer", name, stat))


def layers_with(record: RunRecord, stats: Sequence[str]) -> list[str]:
    """Layers (forward order) holding at least one finite value of any of `stats`."""
    return [
        name
        for name in record.layers
        if any(np.isfinite(stat_array(record, "layer", name, stat)).any() for stat in stats)
    ]


def bucket_starts(count: int, buckets: int) -> np.ndarray:
    """Start indices of at most `buckets` contiguous, near-equal buckets covering `count` items."""
    buckets = max(1, min(count, buckets))
    return np.unique(np.linspace(0, count, buckets, endpoint=False).astype(np.int64))


def downsample_curve(xs: np.ndarray, ys: np.ndarray, buckets: int = MAX_CURVE_BUCKETS) -> tuple[np.ndarray, np.ndarray]:
    """At most 2 x `buckets` points: each bucket's minimum and maximum, in the order they occur,
    so spikes and dips survive. Shorter curves come back as they are. `ys` must be finite."""
    if len(xs) <= 2 * buckets:
        return xs, ys
    starts = bucket_starts(len(xs), buckets)
    low = np.minimum.reduceat(ys, starts)
    high = np.maximum.reduceat(ys, starts)
    # where in each bucket its min and max are, to keep their steps and their order
    index = np.arange(len(ys))
    bucket = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(ys))))
    at_low = _first_where(ys == low[bucket], bucket, index, len(starts))
    at_high = _first_where(ys == high[bucket], bucket, index, len(starts))
    picks = np.sort(np.unique(np.concatenate([at_low, at_high])))
    return xs[picks], ys[picks]


def _first_where(hit: np.ndarray, bucket: np.ndarray, index: np.ndarray, buckets: int) -> np.ndarray:
    first = np.full(buckets, len(index))
    np.minimum.at(first, bucket[hit], index[hit])
    return first


def downsample_columns(grid: np.ndarray, columns: int = MAX_HEATMAP_COLUMNS) -> tuple[np.ndarray, np.ndarray]:
    """(grid of at most `columns` columns, the first original column of each): each new column is
    the median of the finite values its bucket of columns holds (NaN when it holds none)."""
    count = grid.shape[1]
    if count <= columns:
        return grid, np.arange(count)
    starts = bucket_starts(count, columns)
    ends = np.append(starts[1:], count)
    width = int((ends - starts).max())
    # Pad every bucket to the widest with NaN, then one nanmedian over the last axis.
    padded = np.full((grid.shape[0], len(starts), width), np.nan)
    for offset in range(width):
        take = starts + offset
        valid = take < ends
        padded[:, valid, offset] = grid[:, take[valid]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN buckets: NaN is the answer
        reduced = np.nanmedian(padded, axis=2)
    return reduced, starts


def display_name(name: str) -> str:
    """The root module's qualified name is empty; show it as something a reader can see."""
    return name if name else "(root)"
