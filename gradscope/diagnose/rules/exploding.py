"""Exploding gradients: the gradient grows towards the input, is huge, or grows step after step.

The same chain-rule product that makes gradients vanish makes them explode when the
per-layer factors exceed 1 (weights too large for the depth); large steps then throw the
weights further out, and the loss jumps or turns into NaN.
"""

from __future__ import annotations

import math
from statistics import median
from typing import Any, Mapping

from ...record import RunRecord
from ..advice import CLIP_SNIPPET, batchnorm_snippet, code, init_snippet, unnormalized_pairs
from ..finding import Finding
from ..numbers import compact, name_list
from ..reading import is_linear_or_conv, points, weight_layers
from ..rule import Rule
from .depth import depth_profiles


class ExplodingGradients(Rule):
    name = "exploding_gradients"
    code = "exploding-gradients"
    label = "Exploding gradients"
    needs = (("grad_norm", "backprop_norm"),)
    config_keys = (
        "min_layers",
        "warn_depth_growth",
        "min_growth_per_layer",
        "huge_grad_norm",
        "warn_step_growth",
        "min_steps",
        "error_multiple",
    )

    def check(self, record: RunRecord, settings: Mapping[str, Any]) -> list[Finding]:
        reasons: list[str] = []
        evidence: dict[str, Any] = {}
        layers: list[str] = []
        steps: set[int] = set()
        worst_excess = 0.0  # how many times over its threshold the worst measurement is

        profiles = depth_profiles(record, settings["min_layers"])
        if profiles:
            main = profiles[0]
            growth, per_layer = main.first_last_ratio, main.per_layer_factor
            if growth > settings["warn_depth_growth"] and per_layer > settings["min_growth_per_layer"]:
                last = main.values[-1]
                grown = [n for n, v in zip(main.names, main.values) if v / last > settings["warn_depth_growth"]]
                layers += grown
                worst_excess = max(worst_excess, growth / settings["warn_depth_growth"])
                reasons.append(
                    f"the {_what(main.stat)} at the first layer `{main.names[0]}` is {compact(growth)} times that at "
                    f"the last layer `{main.names[-1]}` (x{compact(per_layer)} per layer towards the input)"
                )
                evidence.update(
                    statistic=main.stat,
                    depth_growth=growth,
                    growth_per_layer=per_layer,
                    warn_depth_growth=settings["warn_depth_growth"],
                    min_growth_per_layer=settings["min_growth_per_layer"],
                )
                evidence[f"{main.stat}_per_layer"] = main.as_dict()

        norms = {m.name: points(record, "grad_norm", m.name) for m in weight_layers(record)}
        huge = settings["huge_grad_norm"]
        big = {name: max(v for _, v in pts) for name, pts in norms.items() if pts and max(v for _, v in pts) > huge}
        if big:
            worst = max(big, key=big.get)
            layers += [n for n in big if n not in layers]
            steps.update(s for name in big for s, v in norms[name] if v > huge)
            worst_excess = max(worst_excess, big[worst] / huge)
            reasons.append(f"{name_list(list(big))} reached a gradient norm of up to {compact(big[worst])} (`{worst}`)")
            evidence.update(max_grad_norm=big[worst], max_grad_norm_layer=worst, huge_grad_norm=huge)

        totals = _total_norm_per_step(norms)
        if len(totals) >= max(2, settings["min_steps"]):
            quarter = max(1, len(totals) // 4)
            early = median(v for _, v in totals[:quarter])
            late = median(v for _, v in totals[-quarter:])
            if early > 0 and late / early > settings["warn_step_growth"]:
                steps.update(s for s, _ in totals[-quarter:])
                worst_excess = max(worst_excess, late / early / settings["warn_step_growth"])
                reasons.append(
                    f"the total gradient norm grew {compact(late / early)} times over the run "
                    f"({compact(early)} early, {compact(late)} in the last {quarter} recorded steps)"
                )
                evidence.update(step_growth=late / early, early_total_norm=early, late_total_norm=late, warn_step_growth=settings["warn_step_growth"])

        if not reasons:
            return []
        evidence["error_multiple"] = settings["error_multiple"]
        order = {name: i for i, name in enumerate(record.layers)}
        layers = sorted(set(layers), key=lambda n: order.get(n, len(order)))
        return [
            Finding(
                code=self.code,
                severity="error" if worst_excess > settings["error_multiple"] else "warning",
                title="Gradients explode" + (f" (x{compact(evidence['growth_per_layer'])} per layer towards the input)" if "growth_per_layer" in evidence else ""),
                message=(
                    "Gradients are far too large: " + "; ".join(reasons) + ". Each layer multiplies the backward "
                    "signal by its weights, so weights that are too large for the depth, or a learning rate that "
                    "overshoots, compound into huge steps that throw training off (and eventually into NaN)."
                ),
                recommendation=_recommendation(record),
                snippet=_snippet(record),
                layers=layers,
                steps=sorted(steps),
                evidence=evidence,
            )
        ]


def _what(stat: str) -> str:
    return "backward signal ||dL/d output||" if stat == "backprop_norm" else "gradient RMS"


def _total_norm_per_step(norms: dict[str, list[tuple[int, float]]]) -> list[tuple[int, float]]:
    squares: dict[int, float] = {}
    for pts in norms.values():
        for step, value in pts:
            squares[step] = squares.get(step, 0.0) + value * value
    return [(step, math.sqrt(total)) for step, total in sorted(squares.items())]


def _recommendation(record: RunRecord) -> str:
    text = (
        "Clip the gradient norm with torch.nn.utils.clip_grad_norm_ between backward() and step(), and lower the "
        "learning rate (try 10x lower). Check the weight init: Kaiming for ReLU-family layers, Xavier for tanh, "
        "instead of weights scaled up by hand."
    )
    pairs = unnormalized_pairs(record)
    if pairs:
        text += f" Normalization keeps the per-layer factor near 1: add BatchNorm after {name_list([p[0].name for p in pairs])}."
    return text


def _snippet(record: RunRecord) -> str:
    parts = [CLIP_SNIPPET]
    layers = [m for m in record.modules if is_linear_or_conv(m) and m.executed]
    if layers:
        parts.append("# re-initialise the layers with a depth-safe scale\n" + init_snippet(layers))
    pairs = unnormalized_pairs(record)
    if pairs:
        parts.append(batchnorm_snippet(pairs))
    return code(*parts)
