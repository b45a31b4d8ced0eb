"""Which fixes answer which finding, and the metrics each finding is judged by, in the order they are tried."""

from __future__ import annotations

from . import (
    batchnorm,
    dead_relu,
    exploding,
    overfitting,
    saturation,
    update_ratio,
    vanishing,
)
from .fix import FindingMetrics, Fix

# finding code -> (its metrics, its fixes)
CATALOG: dict[str, tuple[FindingMetrics, tuple[Fix, ...]]] = {
    module.FINDING: (module.METRICS, module.FIXES)
    for module in (vanishing, exploding, dead_relu, saturation, overfitting, update_ratio, batchnorm)
}

FIX_IDS: tuple[str, ...] = tuple(dict.fromkeys(fix.id for _, fixes in CATALOG.values() for fix in fixes))
