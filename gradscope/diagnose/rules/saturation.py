"""Saturation: sigmoid/tanh outputs stuck in the flat region, where the derivative is nearly 0.

Bounded activations pass gradient only near the middle of their range; outputs at 0/1
(sigmoid) or -1/1 (tanh) mean pre-activations too large in magnitude, usually from
unnormalised inputs or weights initialised too large.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from ...record import ModuleInfo, RunRecord
from ...statdefs import SATURATING
from ..advice import (
    activation_swap_snippet,
    batchnorm_snippet,
    code,
    feeding_layers,
    init_snippet,
    unnormalized_pairs,
    xavier_gain_name,
)
from ..finding import Finding
from ..numbers import name_list, percent
from ..reading import hidden_modules, median_of
from ..rule import Rule


class Saturation(Rule):
    name = "saturation"
    code = "saturation"
    label = "Saturated activations"
    needs = ("act_saturation",)
    config_keys = ("warn_fraction", "error_fraction")

    def applies_to(self, record: RunRecord) -> bool:
        return any(m.activation in SATURATING for m in record.modules)

    def check(self, record: RunRecord, settings: Mapping[str, Any]) -> list[Finding]:
        hidden = hidden_modules(record)
        hidden_names = {m.name for m in hidden}
        outputs = [m for m in record.modules if m.activation in SATURATING and m.name not in hidden_names]
        findings = [f for f in (self._output(record, m, settings) for m in outputs) if f is not None]
        saturated: dict[str, float] = {}
        for info in hidden:
            value = median_of(record, "act_saturation", info.name)
            if value is not None and value > settings["warn_fraction"]:
                saturated[info.name] = value
        if not saturated:
            return findings
        names = list(saturated)
        modules = [record.module(n) for n in names]
        worst = max(saturated.values())
        feeding = feeding_layers(record, names)
        pairs = [(layer, act) for layer, act in unnormalized_pairs(record) if act.name in saturated]
        first_layer = next((m for m in record.modules if m.num_params > 0), None)
        advice = []
        inputs_suspect = bool(feeding) and first_layer is not None and feeding[0].name == first_layer.name
        if inputs_suspect:
            advice.append(
                f"`{names[0]}` saturates right after the first layer `{first_layer.name}`: if the inputs are not "
                "standardised (zero mean, unit variance per feature), do that first."
            )
        if pairs:
            advice.append(f"Add BatchNorm after {name_list([p[0].name for p in pairs])}, before the activation.")
        advice.append(
            "Initialise "
            + (name_list([m.name for m in feeding]) if feeding else "the layers before them")
            + " with Xavier (Glorot) init, which keeps pre-activations in the active range,"
            + " or switch to nn.ReLU, which does not saturate for positive inputs."
        )
        snippets = []
        if inputs_suspect:
            snippets.append(_NORMALIZE_INPUTS)
        if pairs:
            snippets.append(batchnorm_snippet(pairs))
        if feeding:
            snippets.append("# Xavier init\n" + init_snippet(feeding, scheme="xavier", activation=xavier_gain_name(modules)))
        snippets.append("# or ReLU\n" + activation_swap_snippet(modules))
        return [
            Finding(
                code=self.code,
                severity="error" if worst > settings["error_fraction"] else "warning",
                title=f"Saturated activations in {len(names)} layer(s), up to {percent(worst)}",
                message=(
                    "Outputs in the flat region: "
                    + ", ".join(f"`{n}` {percent(v)}" for n, v in list(saturated.items())[:6])
                    + ". There the derivative is close to 0, so almost no gradient passes back through these "
                    "units: their pre-activations are too large in magnitude."
                ),
                recommendation=" ".join(advice),
                snippet=code(*snippets),
                layers=names,
                steps=list(record.steps),
                evidence={
                    "saturated_fraction": saturated,
                    "warn_fraction": settings["warn_fraction"],
                    "error_fraction": settings["error_fraction"],
                },
            )
        ] + findings

    def _output(self, record: RunRecord, info: ModuleInfo, settings: Mapping[str, Any]) -> Optional[Finding]:
        """The model's output activation (a generator's Tanh, a classifier's sigmoid, module or function):
        saturating can be the goal when the targets sit at the bounds, so it is worded for an output and
        never an error, and the advice is the output's (logits and a with-logits loss, the output range)."""
        value = median_of(record, "act_saturation", info.name)
        if value is None or value <= settings["warn_fraction"]:
            return None
        feeding = feeding_layers(record, [info.name])
        last = f"`{feeding[0].name}`" if feeding else "the last layer"
        before = f" after `{feeding[0].name}`" if feeding else ""
        meaning, advice, snippet = _output_reading(info, last)
        init = ("# Xavier init of the output layer\n" + init_snippet(feeding, scheme="xavier")) if feeding else ""
        return Finding(
            code=self.code,
            severity="warning",
            title=f"The output activation `{info.name}` ({info.type}) is saturated: {percent(value)} of outputs at its bounds",
            message=(
                f"{percent(value)} of the outputs of `{info.name}` ({info.type}){before}, the model's output "
                f"activation, lie in its flat region (thresholds in gradscope.statdefs). {meaning} This is the "
                "output, not a hidden layer: unless the targets themselves sit at the bounds, the cause is the "
                f"scale of {last}'s outputs, not the depth of the network."
            ),
            recommendation=advice,
            snippet=code(snippet, init),
            layers=[info.name],
            steps=list(record.steps),
            evidence={"saturated_fraction": {info.name: value}, "warn_fraction": settings["warn_fraction"], "output": True},
        )


def _output_reading(info: ModuleInfo, last: str) -> tuple[str, str, str]:
    """(what a saturated output of this kind means, what to do, a snippet) for the model's output activation."""
    rescale = (
        f"Initialise {last} with a smaller scale (Xavier init) so its outputs start in the active range, and "
        "lower the learning rate if they drifted there."
    )
    if info.activation in ("sigmoid", "hardsigmoid"):
        return (
            "Read as probabilities, these are maximally confident predictions (below 0.01 or above 0.99): where one "
            "is wrong, the gradient back through the sigmoid is nearly 0 (its derivative is below 0.0099 there), "
            "so confidently wrong predictions are barely corrected, and BCELoss on them is clipped.",
            "Return the logits and train with nn.BCEWithLogitsLoss (apply torch.sigmoid only to make predictions): "
            "it takes the sigmoid inside the loss, so the gradient (sigmoid(z) - y) stays large exactly where a "
            "prediction is confidently wrong. " + rescale,
            _LOGITS_LOSS,
        )
    if info.activation in ("tanh", "hardtanh", "softsign"):
        return (
            "The outputs are pinned at -1 or +1 (a generator's pixels pure black or white) and pass almost no "
            "gradient back (tanh' < 0.02 there), so those outputs stop learning: a GAN generator whose output "
            "saturates stops improving.",
            rescale + " Check that the targets are scaled to the activation's range (e.g. images normalised to "
            "[-1, 1] for a tanh output, not [0, 255] or [0, 1]).",
            _TARGET_RANGE,
        )
    return (
        "Almost no gradient passes back through outputs in the flat region, so they stop learning.",
        rescale + " Check that the targets are scaled to the activation's range.",
        "",
    )


_LOGITS_LOSS = """# return the logits from forward(): no torch.sigmoid on the output
loss = nn.BCEWithLogitsLoss()(model(x), y)  # the sigmoid, inside the loss, computed stably
probabilities = torch.sigmoid(model(x))     # only to make predictions"""

_TARGET_RANGE = """# targets in the output's range: images scaled to [-1, 1] for a tanh output
images = images / 127.5 - 1.0  # from [0, 255]"""


_NORMALIZE_INPUTS = """# normalise the inputs with statistics of the training set
mean, std = x_train.mean(0), x_train.std(0)
x = (x - mean) / (std + 1e-8)"""
