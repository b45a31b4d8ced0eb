"""Fixes for saturated sigmoid/tanh: BatchNorm before them; Xavier init with the activation's gain."""

from __future__ import annotations

from torch import nn

from ..diagnose.advice import feeding_layers, init_snippet, xavier_gain_name
from ..diagnose.config import Config
from ..diagnose.finding import Finding
from ..diagnose.numbers import name_list
from ..record import RunRecord
from .common import median_over
from .fix import FindingMetrics, Fix, Metrics
from .plan import FixPlan, NotApplicable
from .vanishing import BatchNormBefore

FINDING = "saturation"


def measure(record: RunRecord, finding: Finding, config: Config) -> Metrics:
    """The largest median saturated fraction among the activations the finding named."""
    values = median_over(record, "act_saturation", list(finding.layers))
    return {"saturated_fraction": max(values.values()) if values else None}


METRICS = FindingMetrics(key="saturated_fraction", higher_is_better=False, scale="linear", measure=measure)


class BatchNormBeforeSaturated(BatchNormBefore):
    finding = FINDING

    def targets(self, record: RunRecord, finding: Finding) -> set[str]:
        return set(finding.layers)


class XavierInit(Fix):
    id = "xavier-init"
    finding = FINDING
    summary = "Xavier init with the activation's gain"

    def plan(self, record: RunRecord, finding: Finding, config: Config, model: nn.Module) -> FixPlan:
        feeding = feeding_layers(record, list(finding.layers))
        if not feeding:
            raise NotApplicable("no Linear/Conv layer feeds the saturated activations, so there is nothing to re-initialise")
        gain = xavier_gain_name([m for m in record.modules if m.name in set(finding.layers)])
        return self.new_plan(
            f"Re-initialise {name_list([m.name for m in feeding])} with Xavier (Glorot) init and the {gain} gain.",
            model_code=init_snippet(feeding, scheme="xavier", activation=gain),
            layers=[m.name for m in feeding],
        )


FIXES = (BatchNormBeforeSaturated(), XavierInit())
