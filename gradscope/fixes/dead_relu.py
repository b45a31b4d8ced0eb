"""Fixes for dead ReLUs: LeakyReLU, a lower learning rate, Kaiming init with zero biases."""

from __future__ import annotations

from torch import nn

from ..diagnose.advice import activation_swap_snippet
from ..diagnose.config import Config
from ..diagnose.finding import Finding
from ..diagnose.numbers import name_list
from ..diagnose.reading import smallest_of_last
from ..record import RunRecord
from ..statdefs import RELU_FAMILY
from .exploding import ScaleLearningRate
from .fix import FindingMetrics, Fix, Metrics
from .plan import FixPlan
from .reinit import ReinitFeedingLayers

FINDING = "dead-relu"


def measure(record: RunRecord, finding: Finding, config: Config) -> Metrics:
    """The largest dead fraction among the layers the finding named (as the rule reads it).

    A layer whose activation can no longer die (LeakyReLU passes a gradient for every input)
    counts as 0 dead: no unit of it can output exactly 0 for every sample.
    """
    last_steps = config.section("dead_relu")["last_steps"]
    values = []
    for name in finding.layers:
        info = next((m for m in record.modules if m.name == name), None)
        if info is None:
            continue
        if info.activation not in RELU_FAMILY:
            values.append(0.0)
            continue
        value = smallest_of_last(record, "act_dead_frac", name, last_steps)
        if value is not None:
            values.append(value)
    return {"dead_fraction": max(values) if values else None}


METRICS = FindingMetrics(key="dead_fraction", higher_is_better=False, scale="linear", measure=measure)


def _dead_modules(record: RunRecord, finding: Finding) -> list:
    return [m for m in record.modules if m.name in set(finding.layers)]


class LeakyRelu(Fix):
    id = "leaky-relu"
    finding = FINDING
    summary = "LeakyReLU"

    def plan(self, record: RunRecord, finding: Finding, config: Config, model: nn.Module) -> FixPlan:
        modules = _dead_modules(record, finding)
        slope = config.section("fixes")["leaky_slope"]
        return self.new_plan(
            f"Replace {name_list([m.name for m in modules])} with nn.LeakyReLU({slope:g}).",
            model_code=activation_swap_snippet(modules, f"nn.LeakyReLU({slope:g})", limit=None),
            layers=[m.name for m in modules],
        )


class LowerLearningRate(ScaleLearningRate):
    finding = FINDING


class KaimingInit(ReinitFeedingLayers):
    id = "kaiming-init"
    finding = FINDING
    summary = "Kaiming init, zero bias"
    scheme = "kaiming"


FIXES = (LeakyRelu(), LowerLearningRate(), KaimingInit())
