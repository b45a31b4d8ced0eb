"""Vanishing gradients: the backward signal shrinks layer by layer towards the input.

By the chain rule the signal reaching layer k is the output's signal multiplied by one
Jacobian per layer above it; a sigmoid contributes a derivative of at most 1/4, so a deep
sigmoid stack multiplies many small factors and the first layers barely learn.
"""

from __future__ import annotations

from typing import Any, Mapping

from ...record import RunRecord
from ...statdefs import RELU_FAMILY, SATURATING
from ..advice import (
    activation_swap_snippet,
    batchnorm_snippet,
    code,
    init_snippet,
    residual_snippet,
    unnormalized_pairs,
)
from ..finding import Finding
from ..numbers import compact, name_list, percent
from ..reading import hidden_modules, is_linear_or_conv, median_of, weight_layers
from ..rule import Rule
from .depth import depth_profiles


class VanishingGradients(Rule):
    name = "vanishing_gradients"
    code = "vanishing-gradients"
    label = "Vanishing gradients"
    needs = (("backprop_norm", "grad_rms"),)
    config_keys = (
        "min_layers",
        "warn_ratio",
        "error_ratio",
        "max_decay_per_layer",
        "deep_stack_layers",
        "saturating_fraction",
    )

    def check(self, record: RunRecord, settings: Mapping[str, Any]) -> list[Finding]:
        profiles = depth_profiles(record, settings["min_layers"])
        if not profiles:
            return []
        main = profiles[0]
        ratio, decay = main.first_last_ratio, main.per_layer_factor
        if not (ratio < settings["warn_ratio"] and decay < settings["max_decay_per_layer"]):
            return []
        # A second statistic, where recorded, must at least point the same way.
        if any(p.first_last_ratio >= 1 or p.per_layer_factor >= 1 for p in profiles[1:]):
            return []
        last = main.values[-1]
        starved = [n for n, v in zip(main.names, main.values) if v / last < settings["warn_ratio"]]
        evidence: dict[str, Any] = {
            "statistic": main.stat,
            "first_layer": main.names[0],
            "last_layer": main.names[-1],
            "first_last_ratio": ratio,
            "decay_per_layer": decay,
            "weight_layers": len(main.names),
            "warn_ratio": settings["warn_ratio"],
            "error_ratio": settings["error_ratio"],
            "max_decay_per_layer": settings["max_decay_per_layer"],
        }
        for profile in profiles:
            evidence[f"{profile.stat}_per_layer"] = profile.as_dict()
            if profile is not main:
                evidence[f"{profile.stat}_first_last_ratio"] = profile.first_last_ratio
        advice, snippets = _advice(record, settings, len(weight_layers(record)))
        return [
            Finding(
                code=self.code,
                severity="error" if ratio < settings["error_ratio"] else "warning",
                title=f"Gradients vanish towards the input (x{compact(decay)} per layer, first/last {compact(ratio)})",
                message=(
                    f"The {main.what} at the first layer `{main.names[0]}` is {compact(ratio)} times that at the last "
                    f"layer `{main.names[-1]}`, shrinking by a factor of about {compact(decay)} per layer over "
                    f"{len(main.names)} layers. The chain rule multiplies one factor per layer on the way back, so "
                    f"the input-side layers {name_list(starved)} get almost no gradient and barely learn."
                ),
                recommendation=" ".join(advice),
                snippet=code(*snippets),
                layers=starved,
                steps=[s for s in record.steps if s not in set(record.skipped_steps)],
                evidence=evidence,
            )
        ]


def _advice(record: RunRecord, settings: Mapping[str, Any], depth: int) -> tuple[list[str], list[str]]:
    """What to change, from what the record shows: activations, missing norms, depth."""
    advice: list[str] = []
    snippets: list[str] = []
    hidden = hidden_modules(record)
    bounded = [m for m in hidden if m.activation in SATURATING]
    if bounded:
        saturation = {m.name: median_of(record, "act_saturation", m.name) for m in bounded}
        saturating = [n for n, v in saturation.items() if v is not None and v > settings["saturating_fraction"]]
        kinds = sorted({m.type for m in bounded})
        text = (
            f"Replace the hidden {'/'.join(kinds)} activations {name_list([m.name for m in bounded])} with "
            "nn.ReLU (or LeakyReLU/GELU) and re-initialise the layers before them with Kaiming (He) init: "
            "ReLU's derivative is 1 wherever it is active, while sigmoid's is at most 1/4 and tanh's falls "
            "towards 0 away from the origin."
        )
        if saturating:
            shares = ", ".join(percent(saturation[n]) for n in saturating[:6])
            text += f" {name_list(saturating)} are also saturating ({shares} of outputs in the flat region)."
        advice.append(text)
        weighted = [m for m in record.modules if is_linear_or_conv(m) and m.executed]
        snippets.append(
            "# Option 1: ReLU activations with Kaiming init\n"
            + activation_swap_snippet(bounded)
            + "\n"
            + init_snippet(weighted)
        )
    relus = [m for m in hidden if m.activation in RELU_FAMILY or m.activation in ("leaky_relu", "gelu", "silu", "elu")]
    if relus and not bounded:
        layers = [m for m in record.modules if is_linear_or_conv(m) and m.executed]
        advice.append(
            f"Initialise {name_list([m.name for m in layers])} with Kaiming (He) init for their "
            f"{'/'.join(sorted({m.type for m in relus}))} activations: it keeps the signal's scale from layer to "
            "layer, while PyTorch's default init (variance 1/(3 fan_in)) shrinks it by about sqrt(1/6) = 0.41 per "
            "ReLU layer."
        )
        snippets.append(f"# Option {len(snippets) + 1}: Kaiming init\n" + init_snippet(layers))
    hidden_names = {m.name for m in hidden}
    pairs = [(layer, act) for layer, act in unnormalized_pairs(record) if act.name in hidden_names]
    if pairs:
        advice.append(
            f"Add BatchNorm after {name_list([p[0].name for p in pairs])} (each right before its activation "
            f"{name_list([p[1].name for p in pairs])}): it re-centres and re-scales every layer's input, so the "
            "signal keeps its scale from layer to layer and stays where the activation's derivative is large."
        )
        snippets.append(f"# Option {len(snippets) + 1}: BatchNorm before the activations\n" + batchnorm_snippet(pairs))
    if depth >= settings["deep_stack_layers"]:
        advice.append(
            f"With {depth} weight layers, add residual connections (x + f(x)) so the gradient has an identity "
            "path around each block, or use fewer layers: a shallower net often trains as well here."
        )
        snippets.append(f"# Option {len(snippets) + 1}: residual connections\n" + residual_snippet(record))
    if not advice:
        advice.append(
            "Check the weight init (Kaiming for ReLU-family, Xavier for tanh) and add normalization "
            "(BatchNorm/LayerNorm) between the layers."
        )
    return advice, snippets
