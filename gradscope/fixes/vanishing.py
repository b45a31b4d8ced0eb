"""Fixes for vanishing gradients: ReLU with Kaiming init, BatchNorm before the activations, residual blocks."""

from __future__ import annotations

from torch import nn

from ..diagnose.advice import (
    RESIDUAL_SNIPPET,
    activation_swap_snippet,
    batchnorm_snippet,
    init_snippet,
    residual_wrap_lines,
    unnormalized_pairs,
)
from ..diagnose.config import Config
from ..diagnose.finding import Finding
from ..diagnose.numbers import name_list
from ..diagnose.reading import hidden_modules, is_linear_or_conv
from ..diagnose.rules.depth import depth_profiles
from ..record import RunRecord
from ..statdefs import SATURATING
from .fix import FindingMetrics, Fix, Metrics
from .plan import FixPlan, NotApplicable

FINDING = "vanishing-gradients"


def measure(record: RunRecord, finding: Finding, config: Config) -> Metrics:
    """First/last ratio and fitted per-layer factor of the statistic the finding used."""
    profiles = depth_profiles(record, config.section("vanishing_gradients")["min_layers"])
    wanted = finding.evidence.get("statistic")
    profile = next((p for p in profiles if p.stat == wanted), profiles[0] if profiles else None)
    if profile is None:
        return {"first_last_ratio": None, "decay_per_layer": None}
    return {"first_last_ratio": profile.first_last_ratio, "decay_per_layer": profile.per_layer_factor}


METRICS = FindingMetrics(key="first_last_ratio", higher_is_better=True, scale="log", measure=measure)


class ReluKaiming(Fix):
    id = "relu-kaiming"
    finding = FINDING
    summary = "ReLU + Kaiming init"

    def plan(self, record: RunRecord, finding: Finding, config: Config, model: nn.Module) -> FixPlan:
        bounded = [m for m in hidden_modules(record) if m.activation in SATURATING]
        if not bounded:
            raise NotApplicable(
                "the model has no sigmoid/tanh activation modules to replace (activations called as functions "
                "inside forward() have no module slot to rewrite)"
            )
        weighted = [m for m in record.modules if is_linear_or_conv(m) and m.executed]
        return self.new_plan(
            f"Replace {name_list([m.name for m in bounded])} with nn.ReLU and re-initialise the Linear/Conv layers "
            "with Kaiming (He) init.",
            model_code=activation_swap_snippet(bounded, limit=None) + "\n" + init_snippet(weighted),
            layers=[m.name for m in bounded],
        )


class BatchNormBefore(Fix):
    """BatchNorm between each layer and the activation it feeds; used by vanishing and saturation."""

    id = "batchnorm"
    finding = FINDING
    summary = "BatchNorm before the activations"

    def targets(self, record: RunRecord, finding: Finding) -> set[str]:
        return {m.name for m in hidden_modules(record)}

    def plan(self, record: RunRecord, finding: Finding, config: Config, model: nn.Module) -> FixPlan:
        wanted = self.targets(record, finding)
        pairs = [(layer, act) for layer, act in unnormalized_pairs(record) if act.name in wanted]
        if not pairs:
            raise NotApplicable(
                "no Linear/Conv layer feeds these activations directly (a norm or another layer sits between, or "
                "the activations are functions), so there is no slot for BatchNorm"
            )
        return self.new_plan(
            f"Add BatchNorm after {name_list([p[0].name for p in pairs])}, each right before its activation; the "
            "optimizer is created afterwards, so it trains the new BatchNorm parameters.",
            model_code=batchnorm_snippet(pairs, limit=None),
            layers=[p[0].name for p in pairs],
        )


class ResidualBlocks(Fix):
    id = "residual"
    finding = FINDING
    summary = "residual connections"

    def plan(self, record: RunRecord, finding: Finding, config: Config, model: nn.Module) -> FixPlan:
        hidden = {m.name for m in hidden_modules(record)}
        pairs = [
            (layer, act)
            for layer, act in unnormalized_pairs(record)
            if act.name in hidden and _keeps_shape(model.get_submodule(layer.name))
        ]
        if not pairs:
            raise NotApplicable(
                "no layer keeps the shape of its input (a Linear with in_features == out_features, or a stride-1 "
                "Conv with as many output as input channels and 'same' padding), so x + f(x) is not defined"
            )
        return self.new_plan(
            f"Wrap {name_list([p[0].name for p in pairs])} with their activations in residual blocks x + f(x).",
            model_code=RESIDUAL_SNIPPET + "\n\n\n" + "\n".join(residual_wrap_lines(pairs)),
            layers=[p[0].name for p in pairs],
        )


def _keeps_shape(layer: nn.Module) -> bool:
    if isinstance(layer, nn.Linear):
        return layer.in_features == layer.out_features
    if isinstance(layer, nn.modules.conv._ConvNd) and not layer.transposed:
        if layer.in_channels != layer.out_channels or any(s != 1 for s in layer.stride):
            return False
        if layer.padding == "same":
            return True
        if isinstance(layer.padding, str):
            return False
        return all(
            k % 2 == 1 and p == d * (k - 1) // 2 for k, p, d in zip(layer.kernel_size, layer.padding, layer.dilation)
        )
    return False


FIXES = (ReluKaiming(), BatchNormBefore(), ResidualBlocks())
