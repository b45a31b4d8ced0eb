"""Reading the numbers every trial reports, whatever its finding: the loss, the validation loss, the finding itself."""

from __future__ import annotations

import math
from statistics import median
from typing import Optional

from ..diagnose.clipping import gradient_norm_stat
from ..diagnose.finding import Diagnosis, Finding
from ..diagnose.reading import points, weight_layers
from ..record import RunRecord


def final_loss(record: RunRecord, window: int) -> Optional[float]:
    """The mean of the last `window` logged training losses (one step alone is noisy); NaN if any is not finite."""
    losses = [v for _, v in record.scalars.get("loss", [])][-max(1, window):]
    if not losses:
        return None
    return sum(losses) / len(losses)


def last_val_loss(record: RunRecord) -> Optional[float]:
    values = [v for _, v in record.scalars.get("val_loss", [])]
    return values[-1] if values else None


def first_nonfinite_loss_step(record: RunRecord) -> Optional[int]:
    return next((s for s, v in record.scalars.get("loss", []) if not math.isfinite(v)), None)


def nonfinite_loss_steps(record: RunRecord) -> int:
    return sum(1 for _, v in record.scalars.get("loss", []) if not math.isfinite(v))


def max_grad_norm(record: RunRecord) -> Optional[float]:
    """The largest gradient L2 norm of any weight layer at any recorded step, before clipping where the
    record has it (as the exploding rule reads it): a clipping trial must not win by measuring its own clip."""
    stat = gradient_norm_stat(record)
    values = [v for m in weight_layers(record) for _, v in points(record, stat, m.name)]
    return max(values) if values else None


def median_over(record: RunRecord, stat: str, names: list[str]) -> dict[str, float]:
    out = {}
    for name in names:
        values = [v for _, v in points(record, stat, name)]
        if values:
            out[name] = median(values)
    return out


def same_finding(diagnosis: Diagnosis, code: str) -> Optional[Finding]:
    return next((f for f in diagnosis if f.code == code), None)
