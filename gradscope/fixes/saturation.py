"""Fixes for saturated sigmoid/tanh: BatchNorm before them; Xavier init with the activation's gain."""

from __future__ import annotations

from ..diagnose.config import Config
from ..diagnose.finding import Finding
from ..record import RunRecord
from .common import median_over
from .fix import FindingMetrics, Metrics
from .reinit import ReinitFeedingLayers
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


class XavierInit(ReinitFeedingLayers):
    id = "xavier-init"
    finding = FINDING
    summary = "Xavier init with the activation's gain"
    scheme = "xavier"


FIXES = (BatchNormBeforeSaturated(), XavierInit())
