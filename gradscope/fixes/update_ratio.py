"""Fix for tiny updates: a larger learning rate for the slow layers only."""

from __future__ import annotations

from torch import nn

from ..diagnose.advice import slow_params_snippet
from ..diagnose.config import Config
from ..diagnose.finding import Finding
from ..diagnose.numbers import name_list
from ..record import RunRecord
from .common import median_over
from .fix import FindingMetrics, Fix, Metrics
from .plan import FixPlan, NotApplicable

FINDING = "update-ratio-low"


def measure(record: RunRecord, finding: Finding, config: Config) -> Metrics:
    """The smallest median ||update||/||weight|| among the layers the finding named."""
    values = median_over(record, "update_ratio", list(finding.layers))
    return {"min_update_ratio": min(values.values()) if values else None}


METRICS = FindingMetrics(key="min_update_ratio", higher_is_better=True, scale="log", measure=measure)


def movable_layers(finding: Finding) -> list[str]:
    """The slow layers that do get a gradient (a zero gradient is not moved by any learning rate)."""
    stalled = set(finding.evidence.get("zero_gradient_layers", []))
    return [n for n in finding.layers if n not in stalled]


class SlowLayersLearningRate(Fix):
    id = "slow-layers-lr"
    finding = FINDING
    summary = "larger lr on the slow layers"

    def plan(self, record: RunRecord, finding: Finding, config: Config, model: nn.Module) -> FixPlan:
        names = movable_layers(finding)
        params = [p for m in record.modules if m.name in set(names) for p in m.params]
        if not params:
            raise NotApplicable("every slow layer gets a gradient of exactly 0, which no learning rate moves")
        factor = config.section("fixes")["lr_up"]
        return self.new_plan(
            f"Give the parameters of {name_list(names)} their own parameter group with {factor:g}x the learning rate.",
            optimizer_code=slow_params_snippet(params, factor),
            layers=names,
        )


FIXES = (SlowLayersLearningRate(),)
