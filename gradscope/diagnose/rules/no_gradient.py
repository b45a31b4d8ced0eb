"""Parameters that never received a gradient: frozen or unused, reported as info, never as vanishing.

A gradient that is None (nothing flowed to the parameter) is a different thing from a tiny
one: the parameter is frozen (requires_grad=False), not used by the forward pass, or only
reached through .detach() / torch.no_grad().
"""

from __future__ import annotations

from typing import Any, Mapping

from ...record import RunRecord
from ..finding import Finding
from ..numbers import name_list
from ..rule import Rule


class NoGradient(Rule):
    name = "no_gradient"
    code = "no-gradient"
    label = "Parameters without gradients"
    needs = ("grad_norm",)
    config_keys = ()

    def check(self, record: RunRecord, settings: Mapping[str, Any]) -> list[Finding]:
        params: list[str] = []
        modules: list[str] = []
        frozen: list[str] = []
        unused: list[str] = []
        for info in record.modules:
            missing = [p for p in info.params if not _ever_had_gradient(record, p)]
            if not missing:
                continue
            params += missing
            modules.append(info.name)
            if not info.executed:
                unused.append(info.name)
            elif info.trainable_params < info.num_params:
                frozen.append(info.name)
        if not params:
            return []
        causes = []
        if frozen:
            causes.append(f"{name_list(frozen)} have parameters with requires_grad=False (frozen)")
        if unused:
            causes.append(f"{name_list(unused)} never ran in a training forward pass (unused)")
        if not causes:
            causes.append("they are reached only through .detach() or torch.no_grad(), or do not affect the loss")
        return [
            Finding(
                code=self.code,
                severity="info",
                title=f"{len(params)} parameter(s) in {len(modules)} module(s) never received a gradient",
                message=(
                    f"No gradient ever reached {name_list(params)}: " + "; ".join(causes) + ". Their gradient is "
                    "None, not small, so they are left out of the vanishing-gradient check."
                ),
                recommendation=(
                    "Nothing to do if they are frozen or unused on purpose. Otherwise set requires_grad=True, make "
                    "sure the forward pass uses them without .detach(), and pass them to the optimizer."
                ),
                snippet="\n".join(
                    [
                        f"for name in {params[:12]!r}:",
                        "    model.get_parameter(name).requires_grad_(True)",
                        "optimizer = torch.optim.AdamW(model.parameters(), lr=lr)  # rebuild so it sees them",
                    ]
                ),
                layers=modules,
                steps=list(record.steps),
                evidence={"parameters": params, "frozen_modules": frozen, "unused_modules": unused},
            )
        ]


def _ever_had_gradient(record: RunRecord, param: str) -> bool:
    values = record.param_stats.get(param, {}).get("grad_norm") or []
    return any(v is not None for v in values)
