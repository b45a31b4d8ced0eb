"""Exploding gradients: the gradient grows towards the input or step after step, or is large
enough to throw the weights around.

The same chain-rule product that makes gradients vanish makes them explode when the
per-layer factors exceed 1 (weights too large for the depth); large steps then throw the
weights further out, and the loss jumps or turns into NaN.

Every trigger is scale-free: a loss summed over the batch instead of averaged multiplies every
gradient by the batch size and changes nothing else, and Adam-like optimizers divide that
factor out again. So the rule judges growth (along depth, over the steps), the update-to-weight
ratio and the loss trend, with the optimizer in mind; absolute gradient norms are kept as
evidence and only count where the optimizer turns them into steps (SGD) and the steps are too
large. Each trigger is one function in `SYMPTOMS`, so a new signal (e.g. the gradient norm
before clipping) is one more function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import median
from typing import Any, Callable, Mapping, Optional

import numpy as np

from ...record import RunRecord
from ..advice import (
    batchnorm_snippet,
    clip_snippet,
    code,
    init_snippet,
    unnormalized_pairs,
)
from ..clipping import PRECLIP, clipping, gradient_norm_stat
from ..finding import Finding
from ..numbers import compact, name_list
from ..reading import (
    LossTrend,
    is_linear_or_conv,
    loss_trend,
    median_of,
    optimizer_is_scale_free,
    point_arrays,
    weight_layers,
)
from ..rule import Rule
from .depth import depth_profiles


@dataclass
class Evidence:
    """What every symptom test may read: the record, the settings, and what the run says about
    its optimizer and its loss."""

    record: RunRecord
    settings: Mapping[str, Any]
    scale_free: Optional[bool]  # the optimizer normalises the gradient's scale (Adam); None: unknown
    loss: Optional[LossTrend]  # None when no loss was logged
    norm_stat: str = "grad_norm"  # grad_norm_preclip when recorded: clipping hides an explosion

    @property
    def optimizer(self) -> str:
        return self.record.meta.optimizer or "the optimizer"


@dataclass
class Symptom:
    reason: str  # a clause of the message
    excess: float  # how many times over its threshold the measurement is
    evidence: dict[str, Any]
    layers: list[str] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    weights_too_large: bool = False  # the cause is the init's scale for the depth (re-initialise)


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
        "max_update_ratio",
        "loss_rise",
        "warn_step_growth",
        "min_steps",
        "error_multiple",
    )

    def check(self, record: RunRecord, settings: Mapping[str, Any]) -> list[Finding]:
        seen = Evidence(
            record, settings, optimizer_is_scale_free(record), loss_trend(record), gradient_norm_stat(record)
        )
        symptoms = [s for s in (test(seen) for test in SYMPTOMS) if s is not None]
        if not symptoms:
            return []
        evidence: dict[str, Any] = {"error_multiple": settings["error_multiple"]}
        for symptom in symptoms:
            evidence.update(symptom.evidence)
        evidence.update(_gradient_norms(seen))
        if seen.loss is not None:
            evidence.update(loss_first=seen.loss.first, loss_late=seen.loss.late)
        order = {name: i for i, name in enumerate(record.layers)}
        layers = sorted({n for s in symptoms for n in s.layers}, key=lambda n: order.get(n, len(order)))
        worst_excess = max(s.excess for s in symptoms)
        per_layer = evidence.get("growth_per_layer")
        message = "Gradients are far too large: " + "; ".join(s.reason for s in symptoms) + "."
        if evidence.get("max_grad_norm", 0) > settings["huge_grad_norm"]:
            message += (
                f" Gradient norms reached up to {compact(evidence['max_grad_norm'])} (`{evidence['max_grad_norm_layer']}`)"
                + (" before clipping" if seen.norm_stat == PRECLIP else "")
                + "."
            )
        clipped = clipping(record)
        if clipped is not None and clipped.clipped:
            evidence.update(clipped.evidence())
            message += f" Gradient {clipped.describe()}: the gradients the optimizer used looked smaller than they were."
        if seen.loss is not None:
            message += f" Over the run {seen.loss.describe()}."
        message += (
            " Each layer multiplies the backward signal by its weights, so weights that are too large for the depth, "
            "or a learning rate that overshoots, compound into huge steps that throw training off (and eventually "
            "into NaN)."
        )
        reinit = any(s.weights_too_large for s in symptoms)
        return [
            Finding(
                code=self.code,
                severity="error" if worst_excess > settings["error_multiple"] else "warning",
                title="Gradients explode" + (f" (x{compact(per_layer)} per layer towards the input)" if per_layer else ""),
                message=message,
                recommendation=_recommendation(record, seen, reinit),
                snippet=_snippet(record, seen, reinit),
                layers=layers,
                steps=sorted({step for s in symptoms for step in s.steps}),
                evidence=evidence,
            )
        ]


def _depth_growth(seen: Evidence) -> Optional[Symptom]:
    """The signal grows steadily from the output side towards the input."""
    settings = seen.settings
    profiles = depth_profiles(seen.record, settings["min_layers"])
    if not profiles:
        return None
    main = profiles[0]
    growth, per_layer = main.first_last_ratio, main.per_layer_factor
    if not (growth > settings["warn_depth_growth"] and per_layer > settings["min_growth_per_layer"]):
        return None
    last = main.values[-1]
    return Symptom(
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
        weights_too_large=True,
    )


def _growth_over_steps(seen: Evidence) -> Optional[Symptom]:
    """The total gradient norm of the last quarter of the run against that of the first quarter,
    unless the loss fell meanwhile (gradients may grow while a model learns: a GAN's discriminator)."""
    settings = seen.settings
    totals = _total_norm_per_step(seen.record, seen.norm_stat)
    if len(totals) < max(2, settings["min_steps"]):
        return None
    quarter = max(1, len(totals) // 4)
    early = median(v for _, v in totals[:quarter])
    late = median(v for _, v in totals[-quarter:])
    if early <= 0 or late / early <= settings["warn_step_growth"]:
        return None
    if seen.loss is not None and seen.loss.fell:
        return None
    return Symptom(
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


def _large_gradients_that_move_the_weights(seen: Evidence) -> Optional[Symptom]:
    """Layers whose gradient norm passed `huge_grad_norm` *and* whose steps are too large for them.

    A large norm alone says nothing (a summed loss, a wide layer). With an Adam-like optimizer it
    never sets the step size; with SGD it does, and the update-to-weight ratio shows whether the
    steps are too large (without an optimizer, whether the loss rose instead of falling).
    """
    settings = seen.settings
    huge = settings["huge_grad_norm"]
    peaks = _peak_norms(seen.record, seen.norm_stat)
    over = {name: peak for name, peak in peaks.items() if peak > huge}
    if not over or seen.scale_free:
        return None
    ratios = {n: median_of(seen.record, "update_ratio", n) for n in over}
    ratios = {n: r for n, r in ratios.items() if r is not None}
    if ratios:
        moving = {n: r for n, r in ratios.items() if r > settings["max_update_ratio"]}
        if not moving:
            return None
        why = (
            f"each step of {seen.optimizer} moves them by a median of "
            + ", ".join(f"{compact(r)} (`{n}`)" for n, r in list(moving.items())[:6])
            + f" of their weight norm, above {compact(settings['max_update_ratio'])}"
        )
        layers = list(moving)
    elif seen.loss is not None and seen.loss.rose(settings["loss_rise"]):
        why = seen.loss.describe()
        layers = list(over)
    else:
        return None
    worst = max(layers, key=lambda n: over[n])
    return Symptom(
        reason=(
            f"{name_list(layers)} reached a gradient norm of up to {compact(over[worst])} (`{worst}`)"
            + (" before clipping" if seen.norm_stat == PRECLIP else "")
            + f" and {why}"
        ),
        excess=over[worst] / huge,
        evidence={"max_update_ratio": settings["max_update_ratio"], "median_update_ratio": ratios},
        layers=layers,
        steps=_steps_above(seen.record, seen.norm_stat, layers, huge),
    )


# The triggers, each a function of the evidence returning a Symptom or None.
SYMPTOMS: tuple[Callable[[Evidence], Optional[Symptom]], ...] = (
    _depth_growth,
    _growth_over_steps,
    _large_gradients_that_move_the_weights,
)


def _peak_norms(record: RunRecord, stat: str = "grad_norm") -> dict[str, float]:
    peaks = {}
    for m in weight_layers(record):
        values = point_arrays(record, stat, m.name)[1]
        if len(values):
            peaks[m.name] = float(values.max())
    return peaks


def _steps_above(record: RunRecord, stat: str, layers: list[str], threshold: float) -> list[int]:
    """The steps at which any of `layers` had `stat` above `threshold`, in array operations."""
    above = [steps[values > threshold] for steps, values in (point_arrays(record, stat, n) for n in layers)]
    return np.unique(np.concatenate(above)).tolist() if above else []


def _gradient_norms(seen: Evidence) -> dict[str, Any]:
    """The absolute gradient norms: evidence (what a user compares with), never a trigger alone."""
    peaks = _peak_norms(seen.record, seen.norm_stat)
    if not peaks:
        return {}
    worst = max(peaks, key=peaks.get)
    medians = {n: median_of(seen.record, seen.norm_stat, n) for n in peaks}
    return {
        "max_grad_norm": peaks[worst],
        "max_grad_norm_layer": worst,
        "huge_grad_norm": seen.settings["huge_grad_norm"],
        "optimizer_normalises_gradient_scale": seen.scale_free,
        "grad_norm_per_layer": {n: v for n, v in medians.items() if v is not None},
    }


def _total_norm_per_step(record: RunRecord, stat: str = "grad_norm") -> list[tuple[int, float]]:
    """sqrt of the sum over weight layers of each step's squared norm. Array operations, because a
    long run has 100,000 steps; bincount adds each step's squares in layer order, as a loop would."""
    per_layer = [point_arrays(record, stat, m.name) for m in weight_layers(record)]
    if not per_layer:
        return []
    steps = np.concatenate([s for s, _ in per_layer])
    squares = np.concatenate([v * v for _, v in per_layer])
    if not len(steps):
        return []
    unique, index = np.unique(steps, return_inverse=True)
    totals = np.bincount(index, weights=squares)
    return list(zip(unique.tolist(), np.sqrt(totals).tolist()))


def _clip_level(record: RunRecord) -> Optional[float]:
    """A clipping threshold on the model's own scale: the median total gradient norm of the first
    quarter of the run, rounded to two significant digits (1.0 would throttle a summed loss)."""
    totals = [v for _, v in _total_norm_per_step(record, gradient_norm_stat(record))]
    if not totals:
        return None
    typical = median(totals[: max(1, len(totals) // 4)])
    if not (typical > 0 and math.isfinite(typical)):
        return None
    return float(f"{typical:.2g}")


def _recommendation(record: RunRecord, seen: Evidence, reinit: bool) -> str:
    level = _clip_level(record)
    text = (
        "Clip the gradient norm with torch.nn.utils.clip_grad_norm_ between backward() and step()"
        + (f", at about the total norm of the early steps ({compact(level)})" if level else "")
        + ", and lower the learning rate (try 10x lower)."
    )
    if reinit:
        text += (
            " Check the weight init: Kaiming for ReLU-family layers, Xavier for tanh, instead of weights scaled up "
            "by hand."
        )
        pairs = unnormalized_pairs(record)
        if pairs:
            text += f" Normalization keeps the per-layer factor near 1: add BatchNorm after {name_list([p[0].name for p in pairs])}."
    return text


def _snippet(record: RunRecord, seen: Evidence, reinit: bool) -> str:
    parts = [clip_snippet(_clip_level(record) or 1.0)]
    parts.append("for group in optimizer.param_groups:\n    group[\"lr\"] *= 0.1")
    if reinit:
        layers = [m for m in record.modules if is_linear_or_conv(m) and m.executed]
        if layers:
            parts.append("# re-initialise the layers with a depth-safe scale\n" + init_snippet(layers))
        pairs = unnormalized_pairs(record)
        if pairs:
            parts.append(batchnorm_snippet(pairs))
    return code(*parts)
