"""`FixTrial`: one fix tried on a copy of the model, its numbers before and after, and the verdict.

The verdict follows from the numbers with the thresholds of the `fixes:` section of the
diagnosis config (defaults.yaml), in this order:

- failed: the trial raised, or its training loss was not finite;
- worse: the final loss rose by more than `worse_loss` (relative), the key metric moved the
  wrong way by at least its improvement threshold, or the finding got more severe;
- fixed: the finding is gone;
- improved: the key metric moved the right way by at least its threshold (`improve_decades`
  for ratios and norms, `improve_fraction` for fractions, `improve_loss` for a loss), or the
  finding got less severe;
- no effect: anything else.

"not tried" trials never ran: `reason` says why the fix does not apply to this model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ..diagnose.finding import severity_rank
from ..record import RunRecord
from .fix import FindingMetrics

VERDICTS = ("fixed", "improved", "no effect", "worse", "not tried", "failed")


@dataclass
class FixTrial:
    finding: str  # the finding code, e.g. "vanishing-gradients"
    fix: str  # the fix id, e.g. "relu-kaiming"
    description: str
    code: str  # the snippet shown to the user: exactly the source the trial executed
    verdict: str  # one of VERDICTS
    reason: str = ""  # why not tried / the failure / what decided the verdict
    key_metric: str = ""
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    record: Optional[RunRecord] = None  # the variant's run (None when not tried, failed early, or not retrained)
    seconds: float = 0.0  # wall time of the trial's training

    def to_dict(self) -> dict[str, Any]:
        """Everything but the record (saved separately), JSON-ready."""
        return {
            "finding": self.finding,
            "fix": self.fix,
            "description": self.description,
            "code": self.code,
            "verdict": self.verdict,
            "reason": self.reason,
            "key_metric": self.key_metric,
            "before": dict(self.before),
            "after": dict(self.after),
            "seconds": round(self.seconds, 3),
        }


def judge(metrics: FindingMetrics, before: Mapping[str, Any], after: Mapping[str, Any], settings: Mapping[str, Any]) -> tuple[str, str]:
    """(verdict, the reason in a few words) for a trial that ran."""
    loss_before, loss_after = before.get("final_loss"), after.get("final_loss")
    if loss_after is None or not math.isfinite(loss_after):
        return "failed", f"the training loss became {loss_after}"
    threshold = {
        "log": settings["improve_decades"],
        "linear": settings["improve_fraction"],
        "relative": settings["improve_loss"],
    }[metrics.scale]
    gain = metrics.gain(before.get(metrics.key), after.get(metrics.key))
    rank_before, rank_after = _rank(before.get("finding")), _rank(after.get("finding"))
    worse = []
    if loss_before is not None and math.isfinite(loss_before) and loss_before != 0:
        rise = (loss_after - loss_before) / abs(loss_before)
        if rise > settings["worse_loss"]:
            worse.append(f"the final loss rose by {rise:.0%}")
    if gain is not None and gain <= -threshold:
        worse.append(f"{metrics.key} moved the wrong way")
    if rank_after > rank_before:
        worse.append("the finding got more severe")
    if worse:
        return "worse", "; ".join(worse)
    if rank_after < 0:
        return "fixed", "the finding is gone"
    if (gain is not None and gain >= threshold) or rank_after < rank_before:
        return "improved", f"{metrics.key} improved" if gain is not None and gain >= threshold else "less severe"
    return "no effect", "the finding remains at its severity" if rank_after == rank_before else ""


def _rank(severity: Optional[str]) -> int:
    return severity_rank(severity) if severity else -1
