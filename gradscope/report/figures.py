"""What every gradscope figure shares, the run report's and the sweep's: how a PNG is made.

Each figure is drawn on its own matplotlib `Figure` with the Agg canvas (no pyplot: no global
state, no display needed), from matplotlib's defaults plus a few settings of ours rather than
the user's matplotlibrc (usetex or a dark style must not leak into a report), and saved
without matplotlib's version in the PNG, so the same data gives the same bytes. A figure whose
data was not recorded is not drawn: it is listed with the reason, for the HTML page to show.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100


@dataclass
class RenderedFigure:
    stem: str  # file stem, e.g. "gradient_flow"
    title: str
    png: Optional[bytes]  # None when the data was not recorded
    missing: str = ""  # the reason, when png is None
    reading: str = ""  # how to read it: what healthy and broken look like


def clean_style(ours: Mapping[str, Any]) -> dict[str, Any]:
    """matplotlib's defaults plus `ours`, for `matplotlib.rc_context`: nothing of the user's rc file."""
    defaults = {k: v for k, v in matplotlib.rcParamsDefault.items() if k not in ("backend", "interactive")}
    return {**defaults, **ours}


def draw_png(size_px: tuple[int, int], draw: Callable[[Figure], bool], title: Optional[str] = None) -> Optional[bytes]:
    """PNG bytes of a `size_px` (width, height) figure drawn by `draw`; None when `draw` had no data."""
    width, height = size_px
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    if not draw(figure):
        return None
    if title:
        figure.suptitle(title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})  # no version: same bytes
    return buffer.getvalue()


def positive(value: Optional[float]) -> float:
    """A value a log axis can show, or NaN (a gap) for None, zero, negative or non-finite."""
    if value is None or not math.isfinite(value) or value <= 0:
        return math.nan
    return value
