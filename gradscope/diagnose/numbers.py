"""How findings word numbers and names: the terminal's number spelling and lists of module names.

The numbers themselves are spelled by `gradscope.number_format` (one formatter for every
output); the rules import `compact` and `percent` from here with `name_list`, their vocabulary.
"""

from __future__ import annotations

from typing import Sequence

from ..number_format import compact, percent

__all__ = ["compact", "name_list", "percent"]


def name_list(names: Sequence[str], limit: int = 6) -> str:
    """`a`, `b` and 3 more."""
    shown = [f"`{n}`" if n else "`(root)`" for n in names[:limit]]
    rest = len(names) - len(shown)
    if rest > 0:
        return ", ".join(shown) + f" and {rest} more"
    if len(shown) > 1:
        return ", ".join(shown[:-1]) + " and " + shown[-1]
    return shown[0] if shown else "none"
