"""A handful of run-level numbers per recorded step, for dashboards that chart scalars over time.

A training logger (Lightning's, the Hugging Face Trainer's, TensorBoard, wandb) shows a few
curves well and thousands badly, so the callbacks log only these per recorded step; the
per-layer series stay in the record and go to TensorBoard/wandb through `gradscope.export`.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from .record import RunRecord

PREFIX = "gradscope/"

# name -> what it is (the README's callback section lists the same)
SUMMARY_SCALARS: dict[str, str] = {
    "grad_norm_total": "L2 norm of all watched gradients together, as the optimizer used them",
    "grad_norm_total_preclip": "the same before clipping (at the end of the step's last backward)",
    "clip_factor": "grad_norm_total / grad_norm_total_preclip: below 1 when clipping acted",
    "backprop_first_last_ratio": "backprop_norm at the first weight layer over that at the last (forward order)",
    "dead_frac_max": "the largest act_dead_frac of any layer",
}


def summary_scalars(record: RunRecord, index: int = -1) -> dict[str, float]:
    """The scalars of recorded step `record.steps[index]`, keyed `gradscope/<name>`; unmeasured ones left out."""
    total = _total(record.param_stats, "grad_norm", index)
    before_clipping = _total(record.param_stats, "grad_norm_preclip", index)
    values: dict[str, Optional[float]] = {
        "grad_norm_total": total,
        "grad_norm_total_preclip": before_clipping,
        "clip_factor": total / before_clipping if total is not None and before_clipping else None,
        "backprop_first_last_ratio": _first_last_ratio(record, index),
        "dead_frac_max": _largest(record.layer_stats, "act_dead_frac", index),
    }
    return {PREFIX + name: value for name, value in values.items() if value is not None}


def _at(columns: dict[str, Any], stat: str, index: int) -> Optional[float]:
    column = columns.get(stat)
    if column is None or len(column) == 0:
        return None
    value = column[index]
    return None if value is None else float(value)


def _total(table: dict[str, dict[str, Any]], stat: str, index: int) -> Optional[float]:
    squares = [v * v for columns in table.values() if (v := _at(columns, stat, index)) is not None]
    return math.sqrt(sum(squares)) if squares else None


def _largest(table: dict[str, dict[str, Any]], stat: str, index: int) -> Optional[float]:
    found = [v for columns in table.values() if (v := _at(columns, stat, index)) is not None and not math.isnan(v)]
    return max(found) if found else None


def _first_last_ratio(record: RunRecord, index: int) -> Optional[float]:
    signal = [
        v
        for m in record.modules
        if m.num_params and (v := _at(record.layer_stats.get(m.name, {}), "backprop_norm", index)) is not None
        and v > 0
    ]
    if len(signal) < 2:
        return None
    return signal[0] / signal[-1]
