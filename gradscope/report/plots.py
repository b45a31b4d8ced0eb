"""PNG figures of a run: where does the gradient die, and what do activations and updates do?

How a PNG is made (own Agg figure, clean style, stable bytes) is `figures.py`, shared with the
sweep's figures; this module decides what each figure shows. A figure whose data was not recorded is left out of `render_figures`; `build_figures` says why,
for the HTML report to show.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import matplotlib
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from ..diagnose.finding import Diagnosis, Finding
from ..diagnose.rules.exploding import ExplodingGradients
from ..diagnose.rules.overfitting import Overfitting
from ..diagnose.rules.vanishing import VanishingGradients
from ..io import write_into_folder
from ..number_format import HTML, format_number
from ..record import RunRecord
from .figures import RenderedFigure, clean_style, draw_png, positive
from .series import (
    SUMMARY_DESCRIPTION,
    array_has_nonfinite,
    array_median,
    display_name,
    downsample_columns,
    downsample_curve,
    layers_with,
    stat_array,
    stat_arrays,
)

MAX_TICK_LABELS = 40  # beyond this, label every k-th layer so labels never overlap
MAX_MINOR_TICKS = 200
LABEL_CHARS = 28
UPDATE_RATIO_GUIDE = 1e-3
# Findings whose layers the gradient-flow figure shades.
HIGHLIGHT_CODES = (VanishingGradients.code, ExplodingGradients.code)

_STYLE = {
    "font.size": 9,
    "axes.titlesize": 11,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


@dataclass(frozen=True)
class FigureSpec:
    stem: str  # file stem, e.g. "gradient_flow"
    title: str
    size_px: tuple[int, int]  # (width, height) of the PNG
    missing: str  # why the figure is absent when its data was not recorded
    reading: str  # how to read it: what healthy and broken look like
    draw: Callable[[Figure, RunRecord, Optional[Diagnosis]], bool]  # False: no data, nothing drawn


# ---- public API ---------------------------------------------------------------------------


def render_figures(record: RunRecord, diagnosis: Optional[Diagnosis] = None) -> dict[str, bytes]:
    """File stem -> PNG bytes for every figure whose data the record holds, in reading order."""
    return {f.stem: f.png for f in build_figures(record, diagnosis) if f.png is not None}


def build_figures(record: RunRecord, diagnosis: Optional[Diagnosis] = None) -> list[RenderedFigure]:
    """Every figure in reading order, with PNG bytes or the reason it is absent."""
    rendered = []
    with matplotlib.rc_context(rc=clean_style(_STYLE)):
        for spec in FIGURE_SPECS:
            png = _render(spec, record, diagnosis)
            rendered.append(RenderedFigure(spec.stem, spec.title, png, "" if png else spec.missing, spec.reading))
    return rendered


def render_figure(stem: str, record: RunRecord, diagnosis: Optional[Diagnosis] = None) -> Optional[bytes]:
    """One figure's PNG bytes by stem (see FIGURE_SIZES), or None when its data was not recorded."""
    spec = next((s for s in FIGURE_SPECS if s.stem == stem), None)
    if spec is None:
        raise ValueError(f"Unknown figure {stem!r}; figures are {', '.join(FIGURE_SIZES)}.")
    with matplotlib.rc_context(rc=clean_style(_STYLE)):
        return _render(spec, record, diagnosis)


def write_pngs(
    directory: str | os.PathLike[str],
    record: RunRecord,
    diagnosis: Optional[Diagnosis] = None,
    figures: Optional[list[RenderedFigure]] = None,
) -> list[Path]:
    """Write `<stem>.png` for every available figure into `directory` (created if needed).

    `figures` (from `build_figures`) reuses figures already drawn, e.g. for the HTML report too.
    """
    directory = Path(directory)
    if figures is None:
        figures = build_figures(record, diagnosis)  # all drawn before the first file is written
    return write_into_folder(directory, {f"{f.stem}.png": f.png for f in figures if f.png is not None}, "figure")


# ---- drawing helpers ----------------------------------------------------------------------


def _render(spec: FigureSpec, record: RunRecord, diagnosis: Optional[Diagnosis]) -> Optional[bytes]:
    return draw_png(spec.size_px, lambda figure: spec.draw(figure, record, diagnosis))


def _plain(text: str) -> str:
    """Keep matplotlib from reading `$...$` in a module name as mathtext."""
    return text.replace("$", r"\$")


def _short(name: str, limit: int = LABEL_CHARS) -> str:
    """Long qualified names keep their start and their (most specific) end."""
    name = display_name(name)
    if len(name) <= limit:
        return _plain(name)
    head = limit // 3
    tail = limit - head - 1
    return _plain(name[:head] + "\u2026" + name[-tail:])


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _label_positions(ax, labels: Sequence[str], axis: str = "x") -> None:
    """Tick every position, label at most MAX_TICK_LABELS of them, evenly spaced."""
    count = len(labels)
    every = max(1, math.ceil(count / MAX_TICK_LABELS))
    shown = list(range(0, count, every))
    small = 7 if count > 20 else 8
    # A minor tick per position helps count a few dozen layers; hundreds of them cost seconds to draw.
    minor = range(count) if count <= MAX_MINOR_TICKS else []
    if axis == "x":
        ax.set_xticks(shown, [_short(labels[i]) for i in shown], rotation=90, fontsize=small)
        ax.set_xticks(minor, minor=True)
        ax.set_xlim(-0.5, count - 0.5)
        ax.grid(False, axis="x")
    else:
        ax.set_yticks(shown, [_short(labels[i]) for i in shown], fontsize=small)
        ax.set_yticks(minor, minor=True)


def _layer_axis_label(count: int, noun: str = "layer") -> str:
    sampled = max(1, math.ceil(count / MAX_TICK_LABELS))
    note = f"; 1 in {sampled} labelled" if sampled > 1 else ""
    return f"{noun}, forward order (input \u2192 output; {count} shown{note})"


def _plot_log_lines(ax, series: Sequence[tuple[str, Sequence[Optional[float]], dict]]) -> bool:
    """Lines on a log y axis; NaN breaks a line. False when nothing positive was plotted."""
    plotted = False
    for label, values, style in series:
        ys = np.array([positive(v) for v in values], dtype=float)
        if np.isfinite(ys).any():
            plotted = True
        ax.plot(range(len(ys)), ys, label=label, **style)
    ax.set_yscale("log")
    return plotted


def _mark_edges(ax, nonfinite: Sequence[int], zero: Sequence[int], zero_label: str) -> None:
    """Points a log axis cannot show still matter: mark them along its top and bottom edges."""
    edge = ax.get_xaxis_transform()
    if nonfinite:
        ax.plot(nonfinite, [0.97] * len(nonfinite), "x", color="#d62728", ms=7, transform=edge,
                label="NaN/Inf at some step")
    if zero:
        ax.plot(zero, [0.03] * len(zero), "v", color="0.35", ms=6, transform=edge, label=zero_label)


def _titled(figure: Figure, ax, title: str) -> None:
    """Title on top, the legend in a band at the bottom, so no line hides behind either."""
    figure.suptitle(title)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="outside lower center", ncols=min(len(handles), 4), frameon=False)


def _no_data_note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


# ---- 1. gradient flow ---------------------------------------------------------------------


@dataclass
class _FlowPoint:
    layer: str
    rms: Optional[float]  # of the layer's whole gradient (weights and biases together)
    mean_abs: Optional[float]
    max_abs: Optional[float]
    bias_rms: Optional[float]  # of its `.bias` parameter alone, when recorded
    nonfinite: bool
    all_zero: bool


def _flow_points(record: RunRecord) -> list[_FlowPoint]:
    """One point per module that received a gradient, in forward order."""
    points = []
    for module in record.modules:
        values = {s: stat_arrays(record, "layer", module.name, s) for s in ("grad_rms", "grad_mean_abs", "grad_max")}
        if not any(measured.any() for _, measured in values.values()):
            continue
        biases = [p for p in module.params if p.endswith(".bias") and p in record.param_stats]
        bias_rms = [array_median(stat_array(record, "param", p, "grad_rms")) for p in biases]
        rms = array_median(values["grad_rms"][0])
        points.append(
            _FlowPoint(
                layer=module.name,
                rms=rms,
                mean_abs=array_median(values["grad_mean_abs"][0]),
                max_abs=array_median(values["grad_max"][0]),
                bias_rms=next((b for b in bias_rms if b is not None), None),
                nonfinite=any(array_has_nonfinite(v, m) for v, m in values.values()),
                all_zero=rms == 0,
            )
        )
    return points


def _highlight_findings(diagnosis: Optional[Diagnosis]) -> list[Finding]:
    if diagnosis is None:
        return []
    return [f for f in diagnosis if f.layers and f.code in HIGHLIGHT_CODES]


def _runs(indices: Sequence[int]) -> list[tuple[int, int]]:
    """Contiguous runs of sorted indices as (first, last) pairs."""
    runs: list[tuple[int, int]] = []
    for i in sorted(set(indices)):
        if runs and i == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def _draw_gradient_flow(figure: Figure, record: RunRecord, diagnosis: Optional[Diagnosis]) -> bool:
    points = _flow_points(record)
    if not points:
        return False
    ax = figure.add_subplot()
    colors = ("#d62728", "#ff7f0e")  # one shade per highlighted finding, cycling
    for k, finding in enumerate(_highlight_findings(diagnosis)):
        named = set(finding.layers)
        indices = [i for i, p in enumerate(points) if p.layer in named]
        for j, (first, last) in enumerate(_runs(indices)):
            ax.axvspan(
                first - 0.5,
                last + 0.5,
                color=colors[k % len(colors)],
                alpha=0.12,
                label=_plain(f"{finding.code}: {_clip(finding.title, 70)}") if j == 0 else None,
            )
    plotted = _plot_log_lines(
        ax,
        [
            ("max |g|", [p.max_abs for p in points], {"color": "#1f77b4", "lw": 1.0, "marker": "^", "ms": 3}),
            ("RMS of g", [p.rms for p in points], {"color": "#2ca02c", "lw": 1.8, "marker": "o", "ms": 3}),
            ("mean |g|", [p.mean_abs for p in points], {"color": "#9467bd", "lw": 1.0, "marker": "s", "ms": 2.5}),
        ],
    )
    if any(p.bias_rms is not None for p in points):
        biases = np.array([positive(p.bias_rms) for p in points], dtype=float)
        ax.plot(range(len(points)), biases, "o", mfc="none", mec="#8c564b", ms=5, label="RMS of the bias alone")
    _mark_edges(
        ax,
        nonfinite=[i for i, p in enumerate(points) if p.nonfinite],
        zero=[i for i, p in enumerate(points) if p.all_zero],
        zero_label="gradient exactly 0",
    )
    if not plotted:
        _no_data_note(ax, "no finite, non-zero gradient to plot on a log axis")
    _label_positions(ax, [p.layer for p in points])
    ax.set_xlabel(_layer_axis_label(len(points), noun="layer with parameters"))
    ax.set_ylabel("|gradient| (parameter units, log)")
    _titled(figure, ax, f"Gradient flow: gradient size per layer, weights and biases ({SUMMARY_DESCRIPTION})")
    return True


# ---- 2. backprop signal -------------------------------------------------------------------


def _draw_backprop(figure: Figure, record: RunRecord, diagnosis: Optional[Diagnosis]) -> bool:
    layers = layers_with(record, ["backprop_norm"])
    if not layers:
        return False
    arrays = [stat_arrays(record, "layer", name, "backprop_norm") for name in layers]
    with_data = np.flatnonzero(np.any([np.isfinite(values) for values, _ in arrays], axis=0))
    picks = sorted({int(with_data[0]), int(with_data[-1])})
    ax = figure.add_subplot()
    styles = [
        {"color": "#1f77b4", "lw": 1.2, "marker": "o", "ms": 3},
        {"color": "#d62728", "lw": 1.6, "marker": "s", "ms": 3},
    ]
    lines = []
    for style, index in zip(styles, picks):
        which = "first" if index == picks[0] else "last"
        lines.append((f"step {record.steps[index]} ({which} recorded)", [_at(a, index) for a in arrays], style))
    if not _plot_log_lines(ax, lines):
        _no_data_note(ax, "backprop signal was zero or non-finite everywhere")
    last = [_at(a, picks[-1]) for a in arrays]
    _mark_edges(
        ax,
        nonfinite=[i for i, (values, measured) in enumerate(arrays) if array_has_nonfinite(values, measured)],
        zero=[i for i, v in enumerate(last) if v == 0],
        zero_label="exactly 0 at the last step",
    )
    _label_positions(ax, layers)
    ax.set_xlabel(_layer_axis_label(len(layers)))
    ax.set_ylabel("\u2016dLoss/d(output)\u2016\u2082 (loss units per output unit, log)")
    _titled(figure, ax, "Backprop signal: norm of the gradient reaching each layer's output")
    return True


def _at(arrays: tuple[np.ndarray, np.ndarray], index: int) -> Optional[float]:
    values, measured = arrays
    return float(values[index]) if measured[index] else None


# ---- 3. layer x step heatmap --------------------------------------------------------------


def _draw_heatmap(figure: Figure, record: RunRecord, diagnosis: Optional[Diagnosis]) -> bool:
    layers = layers_with(record, ["grad_rms"])
    if not layers or not record.steps:
        return False
    grid = np.array([stat_array(record, "layer", name, "grad_rms") for name in layers], dtype=float)
    with np.errstate(invalid="ignore"):
        grid[~((grid > 0) & np.isfinite(grid))] = np.nan  # a log colour scale shows positive values; the rest is grey
    grid, starts = downsample_columns(grid)  # long runs: each column the median of a bucket of steps
    shown = np.ma.masked_invalid(grid)
    if shown.count() == 0:
        return False
    low, high = float(shown.min()), float(shown.max())
    if low == high:  # LogNorm needs a range; one decade around a constant
        low, high = low / math.sqrt(10), high * math.sqrt(10)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#d9d9d9")
    ax = figure.add_subplot()
    image = ax.imshow(shown, aspect="auto", interpolation="nearest", cmap=cmap, norm=LogNorm(vmin=low, vmax=high))
    colorbar = figure.colorbar(image, ax=ax, pad=0.01)
    colorbar.set_label("gradient RMS (parameter units, log colour scale)")
    _label_positions(ax, layers, axis="y")
    steps = record.steps
    every = max(1, math.ceil(len(starts) / 20))
    ticks = list(range(0, len(starts), every))
    ax.set_xticks(ticks, [str(steps[starts[i]]) for i in ticks], fontsize=8)
    ax.grid(False)
    bucketed = len(starts) < len(steps)
    per_column = f"each column the median of ~{len(steps) / len(starts):.0f} recorded steps; " if bucketed else ""
    ax.set_xlabel(f"training step ({per_column or 'recorded steps; '}grey: not recorded, zero or NaN)")
    ax.set_ylabel(f"layer, forward order (input at top; {len(layers)} layers)")
    _titled(figure, ax, "Gradient RMS per layer and step")
    return True


# ---- 4. activations -----------------------------------------------------------------------


def _draw_activations(figure: Figure, record: RunRecord, diagnosis: Optional[Diagnosis]) -> bool:
    stats = [
        ("act_sparsity", "sparsity (outputs exactly 0)", {"color": "#1f77b4", "marker": "o"}),
        ("act_dead_frac", "dead units (0 for every sample)", {"color": "#d62728", "marker": "v"}),
        ("act_saturation", "saturation (flat region of sigmoid/tanh)", {"color": "#ff7f0e", "marker": "s"}),
    ]
    layers = layers_with(record, [s for s, _, _ in stats])
    if not layers:
        return False
    ax = figure.add_subplot()
    for stat, label, style in stats:
        # Saturation exists only for bounded activations: connect the layers that have a value.
        points = [(i, array_median(stat_array(record, "layer", name, stat))) for i, name in enumerate(layers)]
        points = [(i, v) for i, v in points if v is not None]
        if points:
            ax.plot([i for i, _ in points], [v for _, v in points], label=label, lw=1.2, ms=3, **style)
    ax.set_ylim(-0.03, 1.03)  # fractions: the full range is the honest scale
    _label_positions(ax, layers)
    ax.set_xlabel(_layer_axis_label(len(layers)))
    ax.set_ylabel("fraction (0 to 1)")
    _titled(figure, ax, f"Activations: sparsity, dead units and saturation per layer ({SUMMARY_DESCRIPTION})")
    return True


# ---- 5. update-to-weight ratio ------------------------------------------------------------


def _draw_update_ratio(figure: Figure, record: RunRecord, diagnosis: Optional[Diagnosis]) -> bool:
    layers = layers_with(record, ["update_ratio"])
    if not layers:
        return False
    ax = figure.add_subplot()
    ratios = [stat_arrays(record, "layer", name, "update_ratio") for name in layers]
    values = [array_median(v) for v, _ in ratios]
    if not _plot_log_lines(ax, [("update / weight", values, {"color": "#2ca02c", "lw": 1.4, "marker": "o", "ms": 3})]):
        _no_data_note(ax, "no update moved any weight")
    ax.axhline(UPDATE_RATIO_GUIDE, color="0.3", ls="--", lw=1.0, label="1e-3 rule of thumb")
    _mark_edges(
        ax,
        nonfinite=[i for i, (v, m) in enumerate(ratios) if array_has_nonfinite(v, m)],
        zero=[i for i, v in enumerate(values) if v == 0],
        zero_label="weights did not move (ratio 0)",
    )
    _label_positions(ax, layers)
    ax.set_xlabel(_layer_axis_label(len(layers)))
    ax.set_ylabel("\u2016\u0394w\u2016 / \u2016w\u2016 per step (dimensionless, log)")
    _titled(figure, ax, f"Update-to-weight ratio per layer ({SUMMARY_DESCRIPTION})")
    return True


# ---- 6. loss curves -----------------------------------------------------------------------


def _draw_loss(figure: Figure, record: RunRecord, diagnosis: Optional[Diagnosis]) -> bool:
    curves = []
    for name, style in (("loss", {"color": "#1f77b4", "lw": 1.2}), ("val_loss", {"color": "#d62728", "lw": 1.6})):
        if name in record.scalars:
            steps, values = record.scalar_series(name)
            xs = np.array(steps, dtype=np.int64)
            ys = np.array([math.nan if v is None else v for v in values], dtype=float)
            finite_ys = np.isfinite(ys)
            xs, ys = downsample_curve(xs[finite_ys], ys[finite_ys])  # long runs: each bucket's min and max
            keep = list(zip(xs.tolist(), ys.tolist()))
            if keep:
                curves.append((name, keep, style))
    if not curves:
        return False
    ax = figure.add_subplot()
    everything = [v for _, keep, _ in curves for _, v in keep]
    for name, keep, style in curves:
        marker = "o" if len(keep) <= 50 else None
        ax.plot([s for s, _ in keep], [v for _, v in keep], label=name, marker=marker, ms=3, **style)
    if min(everything) > 0 and max(everything) / min(everything) > 50:
        ax.set_yscale("log")
    overfitting = diagnosis is not None and Overfitting.code in diagnosis.codes()
    val = next((keep for name, keep, _ in curves if name == "val_loss"), None)
    if overfitting and val:
        best_step, best = min(val, key=lambda pair: pair[1])
        ax.axvline(best_step, color="#d62728", ls=":", lw=1.2, label=f"best val_loss {format_number(best, HTML)} at step {best_step}")
        ax.plot([best_step], [best], "*", color="#d62728", ms=12)
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (as logged with run.log)")
    suffix = " (validation loss rises after its best step: overfitting)" if overfitting and val else ""
    _titled(figure, ax, "Loss curves" + suffix)
    return True


FIGURE_SPECS: tuple[FigureSpec, ...] = (
    FigureSpec(
        stem="gradient_flow",
        title="Gradient flow per layer",
        size_px=(1200, 560),
        missing="not recorded: no module that owns parameters received a gradient (watch with "
        "gradients=True, and call backward() inside the watched loop)",
        reading="Healthy: the lines stay within a decade or two from input to output. Falling steadily "
        "towards the input (left) means vanishing gradients; rising sharply means exploding ones. Shaded: "
        "the layers a finding names. Marks on the top edge: NaN/Inf; on the bottom edge: exactly zero.",
        draw=_draw_gradient_flow,
    ),
    FigureSpec(
        stem="backprop_signal",
        title="Backprop signal per layer",
        size_px=(1200, 520),
        missing="not recorded: no backprop_norm statistics (watch with gradients=True)",
        reading="The chain rule carries dLoss/d(output) backwards, multiplying it by each layer's local "
        "derivative. A straight decline towards the input on this log axis is the geometric decay of "
        "vanishing gradients (a sigmoid multiplies by at most 1/4).",
        draw=_draw_backprop,
    ),
    FigureSpec(
        stem="grad_heatmap",
        title="Gradient RMS per layer and step",
        size_px=(1200, 700),
        missing="not recorded: no gradient RMS at any recorded step",
        reading="Each row is a layer, each column a recorded step. Dark rows at the top (input) mean the "
        "first layers barely learn; a row that darkens over time is a layer dying during training.",
        draw=_draw_heatmap,
    ),
    FigureSpec(
        stem="activations",
        title="Activations per layer",
        size_px=(1200, 520),
        missing="not recorded: no activation statistics (watch with activations=True)",
        reading="High sparsity with dead units above 0 points to dying ReLUs; saturation near 1 means "
        "sigmoid/tanh units sit in their flat region and pass almost no gradient back.",
        draw=_draw_activations,
    ),
    FigureSpec(
        stem="update_ratio",
        title="Update-to-weight ratio per layer",
        size_px=(1200, 520),
        missing="not recorded: update ratios need the optimizer (gradscope.watch(model, optimizer=opt))",
        reading="How far one optimizer step moves each layer's weights, relative to their size. About 1e-3 "
        "is a common rule of thumb; far below, the layer hardly learns (learning rate too low or "
        "gradients vanishing); far above, training is unstable.",
        draw=_draw_update_ratio,
    ),
    FigureSpec(
        stem="loss",
        title="Loss curves",
        size_px=(1200, 480),
        missing="not recorded: log the loss in the training loop with run.log(loss=loss.item(), val_loss=...)",
        reading="The training loss should fall. A validation loss that turns upwards while the training "
        "loss keeps falling is overfitting; when a finding says so, the star marks the best validation "
        "step (where early stopping would have stopped).",
        draw=_draw_loss,
    ),
)

FIGURE_SIZES: dict[str, tuple[int, int]] = {spec.stem: spec.size_px for spec in FIGURE_SPECS}
