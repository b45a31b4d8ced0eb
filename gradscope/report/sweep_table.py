"""The terminal table of a sweep: one row per configuration."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from tabulate import tabulate

from ..number_format import fixed, ratio
from ..sweep.summary import DIVERGED, FAILED, STALLED, TRAINED

_TRAINED = {TRAINED: "yes", STALLED: "no", DIVERGED: "diverged", FAILED: "failed"}

if TYPE_CHECKING:
    from ..sweep.result import SweepResult

HEADERS = (
    "activation", "depth", "norm", "dropout", "init",
    "first/last\nat init", "decay/layer\nat init", "first\nloss", "train\nloss", "val\nloss", "train\nacc",
    "val\nacc", "trained", "error",
)


def render_table(result: "SweepResult") -> str:
    """One row per configuration, a network's inits on adjacent rows. first/last: backprop signal
    at the first hidden layer over that at the last (1e-6: the first layer gets a millionth of the
    signal; "< 1e-19": it underflowed float32); decay/layer: the fitted factor per layer (1: no
    decay); trained: yes, no or diverged (ConfigSummary.outcome; the HTML page has every column)."""
    rows = []
    for s in result.summaries:
        c = s.config
        rows.append([
            c.activation, c.depth, c.norm, f"{c.dropout:g}", c.init,
            ratio(s.first_last_ratio_init, s.first_last_bound("init")), fixed(s.decay_factor_init),
            fixed(s.first_loss), fixed(s.train_loss), fixed(s.val_loss), fixed(s.train_accuracy),
            fixed(s.val_accuracy), _TRAINED.get(s.outcome, "-"), _short(s.error),
        ])
    return tabulate(rows, headers=HEADERS, tablefmt="simple", disable_numparse=True, stralign="right")


def _short(error: Optional[str], limit: int = 40) -> str:
    if not error:
        return ""
    return error if len(error) <= limit else error[: limit - 3] + "..."
