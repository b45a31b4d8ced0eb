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
        """The model's output activation (a generator's Tanh, a classifier's Sigmoid): saturating can be
        the goal when the targets sit at the bounds, so it is worded for an output and never an error."""
        value = median_of(record, "act_saturation", info.name)
        if value is None or value <= settings["warn_fraction"]:
            return None
        feeding = feeding_layers(record, [info.name])
        before = f" after `{feeding[0].name}`" if feeding else ""
        return Finding(
            code=self.code,
            severity="warning",
            title=f"The output activation `{info.name}` ({info.type}) is saturated: {percent(value)} of outputs at its bounds",
            message=(
                f"{percent(value)} of the outputs of `{info.name}` ({info.type}){before}, the model's output "
                "activation, lie in its flat region (thresholds in gradscope.statdefs). Unless the targets "
                "themselves sit at the bounds, the outputs are pinned there and almost no gradient passes back "
                "through them (a GAN generator whose Tanh saturates stops learning)."
            ),
            recommendation=(
                "Initialise "
                + (f"`{feeding[0].name}`" if feeding else "the last layer")
                + " with a smaller scale (Xavier init) so its outputs start in the active range, lower the "
                "learning rate if they drifted there, and check that the targets are scaled to the activation's "
                "range (e.g. images normalised to [-1, 1] for a Tanh output)."
            ),
            snippet=code("# Xavier init of the output layer\n" + init_snippet(feeding, scheme="xavier")) if feeding else "",
            layers=[info.name],
            steps=list(record.steps),
            evidence={"saturated_fraction": {info.name: value}, "warn_fraction": settings["warn_fraction"], "output": True},
        )



_NORMALIZE_INPUTS = """# normalise the inputs with statistics of the training set
mean, std = x_train.mean(0), x_train.std(0)
x = (x - mean) / (std + 1e-8)"""
