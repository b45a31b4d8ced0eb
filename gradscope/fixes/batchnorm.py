"""Fix for BatchNorm on tiny batches: GroupNorm, which normalises each sample on its own."""

from __future__ import annotations

from torch import nn

from ..diagnose.advice import groupnorm_lines
from ..diagnose.config import Config
from ..diagnose.finding import Finding
from ..diagnose.numbers import name_list
from ..record import RunRecord
from .common import final_loss
from .fix import FindingMetrics, Fix, Metrics
from .plan import FixPlan

FINDING = "batchnorm-small-batch"


def measure(record: RunRecord, finding: Finding, config: Config) -> Metrics:
    """The finding's evidence is the batch size, which a fix does not change: the loss is what shows the effect."""
    return {"final_loss": final_loss(record, config.section("fixes")["loss_window"])}


METRICS = FindingMetrics(key="final_loss", higher_is_better=False, scale="relative", measure=measure)


class GroupNormInstead(Fix):
    id = "groupnorm"
    finding = FINDING
    summary = "GroupNorm instead of BatchNorm"

    def plan(self, record: RunRecord, finding: Finding, config: Config, model: nn.Module) -> FixPlan:
        return self.new_plan(
            f"Replace {name_list(list(finding.layers))} with nn.GroupNorm(1, channels), which does not depend on the batch.",
            model_code="\n".join(groupnorm_lines(list(finding.layers), limit=None)),
            layers=list(finding.layers),
        )


FIXES = (GroupNormInstead(),)
