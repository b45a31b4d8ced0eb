"""Reports over long runs: curves keep each bucket's min and max, the heatmap has at most
~1,000 step columns, and a long record renders with the same summaries as plain lists give."""

from __future__ import annotations

import math
import statistics

import numpy as np

from gradscope.record import ModuleInfo, RunMeta, RunRecord
from gradscope.report.plots import render_figure
from gradscope.report.series import (
    MAX_HEATMAP_COLUMNS,
    downsample_columns,
    downsample_curve,
    layer_median,
    median,
)


def test_a_curve_keeps_every_buckets_minimum_and_maximum_in_order():
    rng = np.random.default_rng(0)
    xs = np.arange(50_000)
    ys = rng.normal(size=50_000)
    ys[12_345] = 40.0  # one spike and one dip must survive
    ys[40_001] = -40.0
    kept_x, kept_y = downsample_curve(xs, ys, buckets=500)
    assert len(kept_x) <= 1000 and np.all(np.diff(kept_x) > 0)
    assert 12_345 in kept_x and 40_001 in kept_x
    assert kept_y.max() == 40.0 and kept_y.min() == -40.0
    bucket = 50_000 // 500
    for start in (0, 250 * bucket, 499 * bucket):  # the min and max of a bucket, at their own steps
        part = ys[start : start + bucket]
        inside = (kept_x >= start) & (kept_x < start + bucket)
        assert sorted(kept_y[inside]) == [part.min(), part.max()]
    short_x, short_y = downsample_curve(xs[:900], ys[:900], buckets=500)
    assert np.array_equal(short_y, ys[:900])  # short curves are left alone


def test_the_heatmap_grid_has_at_most_a_thousand_columns_each_a_bucket_median():
    grid = np.arange(3 * 4_500, dtype=float).reshape(3, 4_500)
    grid[1, :] = np.nan  # a layer with nothing measured stays grey
    reduced, starts = downsample_columns(grid)
    assert reduced.shape == (3, len(starts)) and len(starts) <= MAX_HEATMAP_COLUMNS
    ends = list(starts[1:]) + [4_500]
    for column in (0, 517, len(starts) - 1):
        assert reduced[0, column] == statistics.median(grid[0, starts[column] : ends[column]])
    assert np.isnan(reduced[1]).all()
    small, at = downsample_columns(grid[:, :800])
    assert small.shape == (3, 800) and list(at) == list(range(800))


def _long_record(steps: int, layers: int) -> RunRecord:
    record = RunRecord(meta=RunMeta(model_class="Long"))
    record.modules = [ModuleInfo(f"fc{i}", "Linear", 10, [f"fc{i}.weight"], 10) for i in range(layers)]
    rng = np.random.default_rng(1)
    for step in range(steps):
        noise = rng.random(layers)
        values = {f"fc{i}": {"grad_rms": float(10.0 ** (-i) * (1 + noise[i])), "backprop_norm": float(noise[i])}
                  for i in range(layers)}
        values["fc0"]["grad_rms"] = None if step % 7 == 0 else (math.nan if step == 5 else values["fc0"]["grad_rms"])
        record.append_step(step, values, {}, measured=True)
        record.log_scalar(step, "loss", 1.0 / (1 + step) + 0.01 * noise[0])
    return record


def test_a_long_record_renders_with_the_same_summaries_as_lists_give():
    record = _long_record(steps=5_000, layers=6)
    as_list = [v for v in record.series("grad_rms", "fc0")]
    assert layer_median(record, "fc0", "grad_rms") == median(as_list)
    for stem in ("grad_heatmap", "loss", "gradient_flow", "backprop_signal"):
        png = render_figure(stem, record)
        assert png is not None and png.startswith(b"\x89PNG") and len(png) < 400_000
