"""Dead ReLUs: units whose output was 0 for every sample, so no gradient flows through them.

ReLU's derivative is 0 for negative inputs; a unit whose pre-activation is negative for all
inputs (a large negative bias, or a big update that pushed it there) stops learning for good.
"""

from __future__ import annotations

from typing import Any, Mapping

from ...record import RunRecord
from ...statdefs import RELU_FAMILY  # activations that are exactly 0 on a half-line: they can die
from ..advice import activation_swap_snippet, batchnorm_snippet, code, feeding_layers, init_snippet, unnormalized_pairs
from ..finding import Finding
from ..numbers import name_list, percent
from ..reading import activation_modules, smallest_of_last
from ..rule import Rule


class DeadRelu(Rule):
    name = "dead_relu"
    code = "dead-relu"
    label = "Dead ReLU units"
    needs = ("act_dead_frac",)
    config_keys = ("last_steps", "warn_fraction", "error_fraction")

    def applies_to(self, record: RunRecord) -> bool:
        return any(m.activation in RELU_FAMILY for m in record.modules)

    def check(self, record: RunRecord, settings: Mapping[str, Any]) -> list[Finding]:
        dead: dict[str, float] = {}
        for info in activation_modules(record, RELU_FAMILY):
            value = smallest_of_last(record, "act_dead_frac", info.name, settings["last_steps"])
            if value is not None and value > settings["warn_fraction"]:
                dead[info.name] = value
        if not dead:
            return []
        names = list(dead)
        modules = [record.module(n) for n in names]
        feeding = feeding_layers(record, names)
        worst = max(dead.values())
        shares = ", ".join(f"`{n}` {percent(v)}" for n, v in list(dead.items())[:6])
        pairs = [(layer, act) for layer, act in unnormalized_pairs(record) if act.name in dead]
        recommendation = (
            f"Use nn.LeakyReLU(0.01) or nn.GELU for {name_list(names)} (a small slope for negative inputs keeps "
            "the gradient alive), lower the learning rate if units died during training, and initialise "
            + (f"{name_list([m.name for m in feeding])} " if feeding else "the layers before them ")
            + "with Kaiming init and zero biases."
        )
        snippets = ["# LeakyReLU instead of ReLU\n" + activation_swap_snippet(modules, "nn.LeakyReLU(0.01)")]
        if feeding:
            snippets.append("# Kaiming init, zero bias\n" + init_snippet(feeding))
        if pairs:
            recommendation += (
                f" BatchNorm after {name_list([p[0].name for p in pairs])} keeps the pre-activations centred, so "
                "units cannot drift to always-negative."
            )
            snippets.append(batchnorm_snippet(pairs))
        return [
            Finding(
                code=self.code,
                severity="error" if worst > settings["error_fraction"] else "warning",
                title=f"Dead ReLU units in {len(names)} layer(s), up to {percent(worst)}",
                message=(
                    f"Units that output 0 for every sample in each of the last recorded windows: {shares}. ReLU's "
                    "derivative is 0 for negative inputs, so these units pass no gradient back and their weights "
                    "stop changing: the layers have lost that much capacity."
                ),
                recommendation=recommendation,
                snippet=code(*snippets),
                layers=names,
                steps=record.steps[-settings["last_steps"]:],
                evidence={
                    "dead_fraction": dead,
                    "warn_fraction": settings["warn_fraction"],
                    "error_fraction": settings["error_fraction"],
                    "last_steps": settings["last_steps"],
                },
            )
        ]

