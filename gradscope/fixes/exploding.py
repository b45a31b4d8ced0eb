"""Fixes for exploding gradients: clip the gradient norm; lower the learning rate."""

from __future__ import annotations

from torch import nn

from ..diagnose.advice import clip_line, lr_scale_snippet
from ..diagnose.config import Config
from ..diagnose.finding import Finding
from ..record import RunRecord
from .common import max_grad_norm, nonfinite_loss_steps
from .fix import FindingMetrics, Fix, Metrics
from .plan import FixPlan

FINDING = "exploding-gradients"


def measure(record: RunRecord, finding: Finding, config: Config) -> Metrics:
    """The largest layer gradient norm (before clipping where recorded) and steps with a non-finite loss."""
    return {"max_grad_norm": max_grad_norm(record), "nonfinite_steps": float(nonfinite_loss_steps(record))}


METRICS = FindingMetrics(key="max_grad_norm", higher_is_better=False, scale="log", measure=measure)


class ClipGradNorm(Fix):
    id = "clip-grad-norm"
    finding = FINDING
    summary = "clip_grad_norm_"

    def plan(self, record: RunRecord, finding: Finding, config: Config, model: nn.Module) -> FixPlan:
        max_norm = config.section("fixes")["clip_max_norm"]
        return self.new_plan(
            f"Clip the total gradient norm to {max_norm:g} between backward() and step().",
            step_code=clip_line(max_norm),
        )


class ScaleLearningRate(Fix):
    """The learning rate times a factor from the `fixes` config; used by exploding gradients and dead ReLUs."""

    id = "lower-lr"
    finding = FINDING
    summary = "lower learning rate"
    factor_key = "lr_down"

    def plan(self, record: RunRecord, finding: Finding, config: Config, model: nn.Module) -> FixPlan:
        factor = config.section("fixes")[self.factor_key]
        return self.new_plan(
            f"Multiply the learning rate by {factor:g}.", optimizer_code=lr_scale_snippet(factor)
        )


FIXES = (ClipGradNorm(), ScaleLearningRate())
