"""Compact number and name formatting shared by findings and the text report."""

from __future__ import annotations

import math
from typing import Optional, Sequence


def compact(value: Optional[float]) -> str:
    """3 significant digits, scientific notation only outside [0.01, 10000): "0.0123", "1.2e-07"."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if value == 0:
        return "0"
    if isinstance(value, int) and abs(value) < 10**6:
        return str(value)
    magnitude = abs(value)
    if 0.01 <= magnitude < 10_000:
        return f"{value:.3g}"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent):+03d}"


def percent(value: Optional[float]) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return compact(value)
    if 0 < value < 0.01:
        return "<1%"
    return f"{value * 100:.0f}%"


def name_list(names: Sequence[str], limit: int = 6) -> str:
    """`a`, `b` and 3 more."""
    shown = [f"`{n}`" if n else "`(root)`" for n in names[:limit]]
    rest = len(names) - len(shown)
    if rest > 0:
        return ", ".join(shown) + f" and {rest} more"
    if len(shown) > 1:
        return ", ".join(shown[:-1]) + " and " + shown[-1]
    return shown[0] if shown else "none"
