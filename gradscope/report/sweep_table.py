"""The terminal table of a sweep: one row per configuration."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from tabulate import tabulate

if TYPE_CHECKING:
    from ..sweep.result import SweepResult

HEADERS = (
    "activation", "depth", "norm", "dropout",
    "first/last\nat init", "decay/layer\nat init", "first/last\nafter",
    "train\nloss", "val\nloss", "train\nacc", "val\nacc", "error",
)


def render_table(result: "SweepResult") -> str:
    """One row per configuration. first/last: backprop signal at the first hidden layer over that
    at the last (1e-6: the first layer gets a millionth of the signal); decay/layer: the fitted
    factor per layer (1: no decay)."""
    rows = []
    for s in result.summaries:
        c = s.config
        rows.append([
            c.activation, c.depth, c.norm, f"{c.dropout:g}",
            _sci(s.first_last_ratio_init), _fixed(s.decay_factor_init), _sci(s.first_last_ratio_final),
            _fixed(s.train_loss), _fixed(s.val_loss), _fixed(s.train_accuracy), _fixed(s.val_accuracy),
            _short(s.error),
        ])
    return tabulate(rows, headers=HEADERS, tablefmt="simple", disable_numparse=True, stralign="right")


def _sci(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2g}"


def _fixed(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3f}"


def _short(error: Optional[str], limit: int = 40) -> str:
    if not error:
        return ""
    return error if len(error) <= limit else error[: limit - 3] + "..."
