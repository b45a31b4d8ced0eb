"""How gradscope spells a number, in one place: findings, the text report, `compare` and the HTML page.

The statistics span thirty decades (a vanishing gradient is 1e-30, a parameter count 1e8), so a
fixed format is always wrong somewhere: numbers of ordinary size are shown plainly, the rest in
scientific notation. The terminal and the HTML page differ only in their `NumberStyle`: the page
has room for a fourth digit and thousands separators, and typesets the dash and NaN properly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class NumberStyle:
    digits: int  # significant digits of a plain number
    scientific_digits: int  # significant digits in scientific notation
    plain_from: float  # magnitudes in [plain_from, plain_below) are written plainly ...
    plain_below: float  # ... the others in scientific notation
    missing: str  # for None: nothing was measured
    nan: str
    inf: str  # "-" is put in front for -inf
    group_thousands: bool  # integers as 1,234,567 (else plainly below a million, then scientific)


TEXT = NumberStyle(
    digits=3, scientific_digits=2, plain_from=0.01, plain_below=10_000, missing="-", nan="nan", inf="inf",
    group_thousands=False,
)
HTML = NumberStyle(
    digits=4, scientific_digits=4, plain_from=1e-3, plain_below=1e5, missing="\u2014", nan="NaN", inf="Inf",
    group_thousands=True,
)


FLOAT32_TINY = 1e-38  # about the smallest normal float32 (1.18e-38)


def format_number(value: Optional[float], style: NumberStyle = TEXT) -> str:
    """`value` in `style`: "0.0123", "1.2e-07", "inf", "-" (TEXT); "0.01234", "1.235e-07", "1,234" (HTML)."""
    special = _special(value, style)
    if special is not None:
        return special
    assert value is not None
    if isinstance(value, int):
        if style.group_thousands:
            return f"{value:,}"
        if abs(value) < 10**6:
            return str(value)
    if value == 0:
        return "0"
    if style.plain_from <= abs(value) < style.plain_below:
        return f"{value:.{style.digits}g}"
    return f"{value:.{style.scientific_digits - 1}e}"


def compact(value: Optional[float]) -> str:
    """The terminal's spelling (findings, text report, compare): 3 significant digits."""
    return format_number(value, TEXT)


def percent(value: Optional[float], style: NumberStyle = TEXT) -> str:
    """A fraction as a whole percentage: "37%"; "<1%" for a fraction that is small but not zero."""
    special = _special(value, style)
    if special is not None:
        return special
    assert value is not None
    if 0 < value < 0.01:
        return "<1%"
    return f"{value * 100:.0f}%"


def ratio(value: Optional[float], below: Optional[float] = None) -> str:
    """A ratio of two measurements (the sweep's first/last), in two significant digits: "3.2e-05".

    One measured as exactly 0 underflowed float32 rather than vanished completely, so it reads
    "< below" (the bound the caller knows), or "< 1e-38" (about float32's smallest normal); never "0".
    """
    if value is None:
        return TEXT.missing
    if value == 0:
        return f"< {below:.2g}" if below is not None else f"< {FLOAT32_TINY:.0e}"
    return f"{value:.2g}"


def fixed(value: Optional[float], decimals: int = 3) -> str:
    """A loss or an accuracy, whose size is known, with a fixed number of decimals: "0.693"."""
    return TEXT.missing if value is None else f"{value:.{decimals}f}"


def _special(value: Optional[float], style: NumberStyle) -> Optional[str]:
    """The spelling of a value that is not an ordinary number, else None."""
    if value is None:
        return style.missing
    if isinstance(value, bool):
        return str(value)
    if not isinstance(value, int) and not math.isfinite(value):
        return style.nan if math.isnan(value) else (style.inf if value > 0 else f"-{style.inf}")
    return None
