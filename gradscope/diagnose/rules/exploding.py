"""Exploding gradients: the gradient grows towards the input, is huge, or grows step after step.

The same chain-rule product that makes gradients vanish makes them explode when the
per-layer factors exceed 1 (weights too large for the depth); large steps then throw the
weights further out, and the loss jumps or turns into NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import median
from typing import Any, Mapping, Optional

from ...record import RunRecord
from ..advice import CLIP_SNIPPET, batchnorm_snippet, code, init_snippet, unnormalized_pairs
from ..clipping import PRECLIP, clipping, gradient_norm_stat
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
        symptoms = [
            s
            for s in (_depth_growth(record, settings), _huge_norms(record, settings), _growth_over_steps(record, settings))
            if s is not None
        ]
        if not symptoms:
            return []
        evidence: dict[str, Any] = {"error_multiple": settings["error_multiple"]}
        for symptom in symptoms:
            evidence.update(symptom.evidence)
        clipped = clipping(record)
        clip_note = ""
        if clipped is not None and clipped.clipped:
            evidence.update(clipped.evidence())
            clip_note = (
                f" Gradient {clipped.describe()}: the gradients the optimizer used looked smaller than they were."
            )
        order = {name: i for i, name in enumerate(record.layers)}
        layers = sorted({n for s in symptoms for n in s.layers}, key=lambda n: order.get(n, len(order)))
        worst_excess = max(s.excess for s in symptoms)
        per_layer = evidence.get("growth_per_layer")
        return [
            Finding(
                code=self.code,
                severity="error" if worst_excess > settings["error_multiple"] else "warning",
                title="Gradients explode" + (f" (x{compact(per_layer)} per layer towards the input)" if per_layer else ""),
                message=(
                    "Gradients are far too large: " + "; ".join(s.reason for s in symptoms) + ". Each layer "
                    "multiplies the backward signal by its weights, so weights that are too large for the depth, or "
                    "a learning rate that overshoots, compound into huge steps that throw training off (and "
                    "eventually into NaN)." + clip_note
                ),
                recommendation=_recommendation(record),
                snippet=_snippet(record),
                layers=layers,
                steps=sorted({step for s in symptoms for step in s.steps}),
                evidence=evidence,
            )
        ]


@dataclass
class _Symptom:
    reason: str  # a clause of the message
    excess: float  # how many times over its threshold the measurement is
    evidence: dict[str, Any]
    layers: list[str] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)


def _depth_growth(record: RunRecord, settings: Mapping[str, Any]) -> Optional[_Symptom]:
    """The signal grows steadily from the output side towards the input."""
    profiles = depth_profiles(record, settings["min_layers"])
    if not profiles:
        return None
    main = profiles[0]
    growth, per_layer = main.first_last_ratio, main.per_layer_factor
    if not (growth > settings["warn_depth_growth"] and per_layer > settings["min_growth_per_layer"]):
        return None
    last = main.values[-1]
    return _Symptom(
        reason=(
            f"the {main.what} at the first layer `{main.names[0]}` is {compact(growth)} times that at the last "
            f"layer `{main.names[-1]}` (x{compact(per_layer)} per layer towards the input)"
        ),
        excess=growth / settings["warn_depth_growth"],
        evidence={
            "statistic": main.stat,
            "depth_growth": growth,
            "growth_per_layer": per_layer,
            "warn_depth_growth": settings["warn_depth_growth"],
            "min_growth_per_layer": settings["min_growth_per_layer"],
            f"{main.stat}_per_layer": main.as_dict(),
        },
        layers=[n for n, v in zip(main.names, main.values) if v / last > settings["warn_depth_growth"]],
    )


def _huge_norms(record: RunRecord, settings: Mapping[str, Any]) -> Optional[_Symptom]:
    """Some layer's gradient norm passed an absolute limit at some recorded step."""
    huge = settings["huge_grad_norm"]
    stat = gradient_norm_stat(record)  # before clipping, when recorded: clipping hides an explosion
    over = {m.name: [(s, v) for s, v in points(record, stat, m.name) if v > huge] for m in weight_layers(record)}
    over = {name: pts for name, pts in over.items() if pts}
    if not over:
        return None
    peaks = {name: max(v for _, v in pts) for name, pts in over.items()}
    worst = max(peaks, key=peaks.get)
    return _Symptom(
        reason=(
            f"{name_list(list(over))} reached a gradient norm of up to {compact(peaks[worst])} (`{worst}`)"
            + (" before clipping" if stat == PRECLIP else "")
        ),
        excess=peaks[worst] / huge,
        evidence={"max_grad_norm": peaks[worst], "max_grad_norm_layer": worst, "huge_grad_norm": huge},
        layers=list(over),
        steps=sorted({s for pts in over.values() for s, _ in pts}),
    )


def _growth_over_steps(record: RunRecord, settings: Mapping[str, Any]) -> Optional[_Symptom]:
    """The total gradient norm of the last quarter of the run against that of the first quarter."""
    stat = gradient_norm_stat(record)
    totals = _total_norm_per_step({m.name: points(record, stat, m.name) for m in weight_layers(record)})
    if len(totals) < max(2, settings["min_steps"]):
        return None
    quarter = max(1, len(totals) // 4)
    early = median(v for _, v in totals[:quarter])
    late = median(v for _, v in totals[-quarter:])
    if early <= 0 or late / early <= settings["warn_step_growth"]:
        return None
    return _Symptom(
        reason=(
            f"the total gradient norm grew {compact(late / early)} times over the run ({compact(early)} early, "
            f"{compact(late)} in the last {quarter} recorded steps)"
        ),
        excess=late / early / settings["warn_step_growth"],
        evidence={
            "step_growth": late / early,
            "early_total_norm": early,
            "late_total_norm": late,
            "warn_step_growth": settings["warn_step_growth"],
        },
        steps=[s for s, _ in totals[-quarter:]],
    )


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
        layers = name_list([p[0].name for p in pairs])
        text += f" Normalization keeps the per-layer factor near 1: add BatchNorm after {layers}."
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
