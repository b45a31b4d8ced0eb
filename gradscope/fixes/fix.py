"""What every fix and every finding's metrics declare, so the trial runner treats them alike.

A `Fix` turns a finding of the base run into a `FixPlan` (or raises `NotApplicable` saying
why it cannot apply to this model). `FindingMetrics` reads, from any run of the model, the
numbers that are the finding's own evidence, and names the one that decides the verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional

from torch import nn

from ..diagnose.config import Config
from ..diagnose.finding import Finding
from ..record import RunRecord
from .plan import FixPlan

Metrics = dict[str, Optional[float]]


class Fix:
    """One change that answers one finding. Subclasses set the class attributes and `plan`."""

    id: ClassVar[str]  # e.g. "relu-kaiming"; unique per finding code
    finding: ClassVar[str]  # the finding code it answers
    summary: ClassVar[str]  # what it changes, in a few words, for tables ("ReLU + Kaiming init")

    def plan(self, record: RunRecord, finding: Finding, config: Config, model: nn.Module) -> FixPlan:
        """The code for this model. `model` is a spare, freshly built copy to inspect (never trained)."""
        raise NotImplementedError

    def new_plan(self, description: str, **code: Any) -> FixPlan:
        return FixPlan(fix=self.id, finding=self.finding, description=description, **code)


@dataclass(frozen=True)
class FindingMetrics:
    """The evidence of one finding code, measurable on any run of the model.

    `key` is the metric the verdict reads; `higher_is_better` its direction; `scale` is "log"
    for quantities that span orders of magnitude (a change counts in decades), "linear" for
    fractions (a change counts by its difference) or "relative" for a loss (by its fraction).
    """

    key: str
    higher_is_better: bool
    scale: str  # "log" | "linear" | "relative"
    measure: Callable[[RunRecord, Finding, Config], Metrics]

    def gain(self, before: Optional[float], after: Optional[float]) -> Optional[float]:
        """How far the key metric moved in the good direction: decades (log) or the difference (linear)."""
        if before is None or after is None or not (math.isfinite(before) and math.isfinite(after)):
            return None
        if self.scale == "log":
            if before <= 0 or after <= 0:
                return None
            change = math.log10(after / before)
        elif self.scale == "relative":
            if before == 0:
                return None
            change = (after - before) / abs(before)
        else:
            change = after - before
        return change if self.higher_is_better else -change
