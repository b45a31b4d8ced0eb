"""PNG figures of a depth sweep: how the backprop signal decays with depth, per activation.

    figures = render_sweep_figures(result)        # file stem -> PNG bytes
    write_sweep_pngs("out/", result)              # the same, as files

How a PNG is made (own Agg figure, clean style, stable bytes) is `figures.py`, shared with
the run report's figures. A figure whose data the sweep does not hold (ReLU sparsity without a ReLU configuration) is listed with the
reason instead, for the HTML page to show.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import matplotlib
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from ..io import write_into_folder
from ..number_format import ratio
from ..sweep.result import SweepResult
from ..sweep.summary import ConfigSummary
from .figures import RenderedFigure, clean_style, draw_png, positive

PANEL_PX = (300, 260)  # one small multiple
LEGEND_PX = 200  # room for a legend right of the panels
SPARSE_ACTIVATIONS = ("relu",)  # outputs exactly 0 for negative inputs: sparsity means something
_STYLE = {"font.size": 8, "axes.titlesize": 9, "legend.fontsize": 7, "axes.grid": True, "grid.alpha": 0.3}
_COLORS = {"sigmoid": "#d62728", "tanh": "#1f77b4", "relu": "#2ca02c", "leaky_relu": "#17becf",
           "gelu": "#9467bd", "identity": "#7f7f7f"}
_NORM_STYLES = {"none": "-", "batchnorm": "--"}
# With several inits the line style tells the init (the lecture's pairing solid) and BatchNorm a marker.
_INIT_STYLES = {"default": "--", "recommended": "-", "xavier": "-.", "kaiming": ":"}


SweepFigure = RenderedFigure  # the name the sweep page and its callers know


@dataclass(frozen=True)
class _Spec:
    stem: str
    title: str
    missing: str
    reading: str
    draw: Callable[[Figure, SweepResult], bool]  # False: nothing to draw
    size: Callable[[SweepResult], tuple[int, int]]


def render_sweep_figures(result: SweepResult) -> dict[str, bytes]:
    """File stem -> PNG bytes of every figure the sweep has data for, in reading order."""
    return {f.stem: f.png for f in build_sweep_figures(result) if f.png is not None}


def build_sweep_figures(result: SweepResult) -> list[SweepFigure]:
    figures = []
    with matplotlib.rc_context(rc=clean_style(_STYLE)):
        for spec in _SPECS:
            png = _render(spec, result)
            figures.append(SweepFigure(spec.stem, spec.title, png, "" if png else spec.missing, spec.reading))
    return figures


def write_sweep_pngs(
    directory: str | os.PathLike[str], result: SweepResult, figures: Optional[list[SweepFigure]] = None
) -> list[Path]:
    """Write `<stem>.png` for every available figure into `directory` (created if needed)."""
    directory = Path(directory)
    if figures is None:
        figures = build_sweep_figures(result)  # all drawn before the first file is written
    return write_into_folder(directory, {f"sweep_{f.stem}.png": f.png for f in figures if f.png}, "figure")


# ---- which configurations go where -------------------------------------------------------------


def _depths(result: SweepResult) -> list[int]:
    return sorted({s.config.depth for s in result.summaries})


def _activations(result: SweepResult) -> list[str]:
    return list(dict.fromkeys(s.config.activation for s in result.summaries))


def _variants(result: SweepResult) -> list[tuple[str, float]]:
    """(norm, dropout) combinations in sweep order."""
    return list(dict.fromkeys((s.config.norm, s.config.dropout) for s in result.summaries))


def _inits(result: SweepResult) -> list[str]:
    return list(dict.fromkeys(s.config.init for s in result.summaries))


def _variant_label(norm: str, dropout: float) -> str:
    parts = ["no norm" if norm == "none" else norm]
    parts.append(f"dropout {dropout:g}" if dropout else "no dropout")
    return ", ".join(parts)


def _curve_depth(result: SweepResult) -> int:
    """The depth the training-curve figure shows: the middle one (8 in the default sweep)."""
    depths = _depths(result)
    return depths[len(depths) // 2]


def _line_style(summary: ConfigSummary, several_inits: bool) -> dict:
    c = summary.config
    style = {"color": _COLORS.get(c.activation, "black")}
    if several_inits:
        style["linestyle"] = _INIT_STYLES.get(c.init, ":")
        if c.norm != "none":
            style["marker"] = "s"
    else:
        style["linestyle"] = _NORM_STYLES.get(c.norm, ":")
    if c.dropout:
        style["marker"] = "D" if "marker" in style else "o"
    if "marker" in style:
        style["markersize"] = 2.5
    return style


def _line_label(summary: ConfigSummary, variants: list[tuple[str, float]], several_inits: bool) -> str:
    c = summary.config
    parts = [c.activation]
    if len(variants) > 1:
        parts.append(_variant_label(c.norm, c.dropout))
    if several_inits:
        parts.append(f"{c.init} init")
    return ", ".join(parts)


# ---- figures -----------------------------------------------------------------------------------


def _draw_backprop(figure: Figure, result: SweepResult) -> bool:
    depths = _depths(result)
    variants = _variants(result)
    several_inits = len(_inits(result)) > 1
    axes = figure.subplots(2, len(depths), squeeze=False, sharey="row")
    plotted = False
    for row, (when, label) in enumerate((("init", "at initialisation"), ("final", "after training"))):
        for col, depth in enumerate(depths):
            ax = axes[row][col]
            for s in (s for s in result.summaries if s.config.depth == depth):
                values = np.array([positive(v) for v in getattr(s.backprop, when)])
                if np.isfinite(values).any():
                    plotted = True
                    ax.plot(np.arange(1, depth + 1), values, label=_line_label(s, variants, several_inits),
                            **_line_style(s, several_inits))
            ax.set_yscale("log")
            ax.set_title(f"depth {depth}, {label}")
            ax.set_xlabel("hidden layer (input \u2192 output)")
            _integer_ticks(ax, depth)
        axes[row][0].set_ylabel("||dLoss/d(layer output)||")
    _legend_outside(figure, axes[0][-1])
    return plotted


def _draw_ratio_heatmap(figure: Figure, result: SweepResult) -> bool:
    """One panel per init (rows) and norm/dropout variant (columns): activation x depth."""
    depths, activations, variants, inits = _depths(result), _activations(result), _variants(result), _inits(result)
    panels = [(init, variant) for init in inits for variant in variants]
    grids, bounds = [], []
    for init, (norm, dropout) in panels:
        grid = np.full((len(activations), len(depths)), np.nan)
        bound = np.full_like(grid, np.nan)
        for s in result.summaries:
            c = s.config
            if (c.init, c.norm, c.dropout) == (init, norm, dropout) and s.first_last_ratio_init is not None:
                cell = activations.index(c.activation), depths.index(c.depth)
                grid[cell] = s.first_last_ratio_init
                bound[cell] = s.first_last_bound("init") or np.nan
        grids.append(grid)
        bounds.append(bound)
    positive = np.concatenate([g[np.isfinite(g) & (g > 0)] for g in grids])
    if positive.size == 0:
        return False
    low, high = float(positive.min()), float(positive.max())
    if low == high:
        low, high = low / 10, high * 10
    norm = LogNorm(vmin=low, vmax=high)
    # under: a ratio of exactly 0 (the first layer's gradient underflowed); bad: not measured (failed)
    cmap = matplotlib.colormaps["viridis"].with_extremes(under="black", bad="#dddddd")
    axes = figure.subplots(len(inits), len(variants), squeeze=False)
    image = None
    for index, (grid, bound, (init, (norm_name, dropout))) in enumerate(zip(grids, bounds, panels)):
        ax = axes[index // len(variants)][index % len(variants)]
        shown = np.where(grid == 0, low / 1e3, grid)
        image = ax.imshow(np.ma.masked_invalid(shown), norm=norm, cmap=cmap, aspect="auto")
        ax.set_xticks(range(len(depths)), [str(d) for d in depths])
        ax.set_yticks(range(len(activations)), activations)
        ax.set_xlabel("depth (hidden layers)")
        title = _variant_label(norm_name, dropout)
        ax.set_title(title if len(inits) == 1 else f"{init} init, {title}")
        ax.grid(False)
        for i in range(len(activations)):
            for j in range(len(depths)):
                value = grid[i, j]
                if math.isnan(value):
                    text = "\u2014"
                else:
                    text = ratio(value, None if math.isnan(bound[i, j]) else bound[i, j]).replace("< ", "<")
                light = not math.isnan(value) and (value == 0 or norm(value) < 0.5)
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if light else "black")
    figure.colorbar(image, ax=list(axes.flat), label="first/last backprop ratio at init (log)", extend="min")
    return True


def _draw_training_curves(figure: Figure, result: SweepResult) -> bool:
    depth = _curve_depth(result)
    variants, inits = _variants(result), _inits(result)
    panels = [(init, variant) for init in inits for variant in variants]
    axes = figure.subplots(len(inits), len(variants), squeeze=False, sharey=True)
    plotted = False
    for index, (init, (norm, dropout)) in enumerate(panels):
        ax = axes[index // len(variants)][index % len(variants)]
        for s, record in zip(result.summaries, result.records):
            c = s.config
            if c.depth != depth or (c.init, c.norm, c.dropout) != (init, norm, dropout) or record is None:
                continue
            color = _COLORS.get(c.activation, "black")
            for name, style, suffix in (("loss", "-", "train"), ("val_loss", "--", "val")):
                if name in record.scalars:
                    steps, values = record.scalar_series(name)
                    ax.plot(steps, values, color=color, linestyle=style, label=f"{c.activation} {suffix}")
                    plotted = True
        title = f"depth {depth}, {_variant_label(norm, dropout)}"
        ax.set_title(title if len(inits) == 1 else f"{title}, {init} init")
        ax.set_xlabel("step")
    for row in axes:
        row[0].set_ylabel("cross-entropy loss")
    _legend_outside(figure, axes[0][-1])
    return plotted


def _draw_relu_sparsity(figure: Figure, result: SweepResult) -> bool:
    chosen = [s for s in result.summaries if s.config.activation in SPARSE_ACTIVATIONS]
    if not chosen:
        return False
    variants = _variants(result)
    several_inits = len(_inits(result)) > 1
    axes = figure.subplots(1, 2, squeeze=False, sharey=True)[0]
    depths = _depths(result)
    colors = matplotlib.colormaps["viridis"](np.linspace(0, 0.85, max(1, len(depths))))
    plotted = False
    for ax, (when, label) in zip(axes, (("init", "at initialisation"), ("final", "after training"))):
        for s in chosen:
            values = [math.nan if v is None else v for v in getattr(s.sparsity, when)]
            if not any(math.isfinite(v) for v in values):
                continue
            plotted = True
            c = s.config
            parts = [f"depth {c.depth}"] + ([_variant_label(c.norm, c.dropout)] if len(variants) > 1 else [])
            label_text = ", ".join(parts + ([f"{c.init} init"] if several_inits else []))
            style = {**_line_style(s, several_inits), "color": colors[depths.index(c.depth)]}
            ax.plot(range(1, len(values) + 1), values, label=label_text, **style)
        ax.axhline(0.5, color="black", linewidth=0.8, linestyle=":")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"ReLU output sparsity, {label}")
        ax.set_xlabel("hidden layer (input \u2192 output)")
    axes[0].set_ylabel("fraction of outputs exactly 0")
    _legend_outside(figure, axes[0])
    return plotted


def _backprop_size(result: SweepResult) -> tuple[int, int]:
    return (max(2, len(_depths(result))) * PANEL_PX[0] + LEGEND_PX, 2 * PANEL_PX[1] + 40)


def _heatmap_size(result: SweepResult) -> tuple[int, int]:
    return (len(_variants(result)) * 380 + 120, len(_inits(result)) * 290 + 40)


def _curves_size(result: SweepResult) -> tuple[int, int]:
    return (len(_variants(result)) * 380 + LEGEND_PX, len(_inits(result)) * 290 + 40)


_SPECS: tuple[_Spec, ...] = (
    _Spec(
        "backprop_by_layer", "Backprop signal by layer",
        "no configuration recorded a backprop signal (every one failed before its first step)",
        "Each line is one network: the size of the gradient reaching each hidden layer's output, input on the "
        "left. A line falling to the left is a vanishing gradient: the steeper, the faster it vanishes "
        "(sigmoid loses ~7x per layer at PyTorch's default init). Flat lines keep the signal. When the sweep ran "
        "both inits, dashed lines are PyTorch's default init and solid ones the init recommended for the "
        "activation (Xavier with its gain for sigmoid/tanh, Kaiming for ReLU).",
        _draw_backprop, _backprop_size,
    ),
    _Spec(
        "ratio_heatmap", "First/last backprop ratio",
        "no configuration has a first/last ratio (every one failed)",
        "Signal at the first hidden layer divided by the signal at the last, at initialisation. 1 is perfect flow; "
        "1e-6 means the first layer learns a million times slower than the last. One row of panels per init. "
        "Black cells marked '<x': the first layer's gradient underflowed float32 (recorded as 0); the ratio is "
        "below x, the smallest signal still measured over the last.",
        _draw_ratio_heatmap, _heatmap_size,
    ),
    _Spec(
        "training_curves", "Training curves",
        "no training losses were logged (every configuration failed)",
        "Training loss (solid) and validation loss (dashed) per activation at one depth. A flat line at the start "
        "value: the network does not train; a line rising above it: it diverged. One row of panels per init.",
        _draw_training_curves, _curves_size,
    ),
    _Spec(
        "relu_sparsity", "ReLU sparsity by layer",
        "the sweep has no ReLU configuration",
        "Fraction of ReLU outputs that are exactly 0, per hidden layer. At initialisation about half (the sparse "
        "code of Glorot, Bordes & Bengio 2011); a layer near 1 after training has died.",
        _draw_relu_sparsity, lambda result: (600 + LEGEND_PX, 320),
    ),
)


# ---- helpers -----------------------------------------------------------------------------------


def _render(spec: _Spec, result: SweepResult) -> Optional[bytes]:
    if not result.summaries:
        return None
    return draw_png(spec.size(result), lambda figure: spec.draw(figure, result), title=spec.title)


def _legend_outside(figure: Figure, ax) -> None:
    """One legend right of all panels, so it never hides a line."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="outside right upper")


def _integer_ticks(ax, depth: int) -> None:
    step = max(1, math.ceil(depth / 8))
    ax.set_xticks(range(1, depth + 1, step))
    ax.set_xlim(0.5, depth + 0.5)
