"""Update-to-weight ratio: how much of each layer one optimizer step changes.

Around 1e-3 per step is the usual healthy range; far below, the layer barely moves (learning
rate too low for it, or almost no gradient reaches it); far above, each step rewrites a large
part of the weights and training is unstable.
"""

from __future__ import annotations

from typing import Any, Mapping

from ...record import ModuleInfo, RunRecord
from ..advice import lr_scale_snippet, slow_params_snippet
from ..finding import Finding
from ..numbers import compact, name_list
from ..reading import median_of, point_arrays
from ..rule import Rule


class UpdateRatio(Rule):
    name = "update_ratio"
    code = "update-ratio"  # its findings are "update-ratio-low" and "update-ratio-high"
    label = "Update-to-weight ratios"
    needs = ("update_ratio",)
    config_keys = ("low", "high")

    def check(self, record: RunRecord, settings: Mapping[str, Any]) -> list[Finding]:
        ratios: dict[str, float] = {}
        for info in record.modules:
            value = median_of(record, "update_ratio", info.name)
            if value is None or not len(point_arrays(record, "grad_norm", info.name)[0]):
                continue  # layers without any gradient belong to the no-gradient rule
            if _started_at_zero(record, info.name):
                continue  # zero-initialised (a bias-only head, a zero-init residual branch): no scale to compare with
            ratios[info.name] = value
        low = {n: v for n, v in ratios.items() if v < settings["low"]}
        high = {n: v for n, v in ratios.items() if v > settings["high"]}
        findings = []
        steps = [s for s in record.steps if s not in set(record.skipped_steps)]
        evidence = {"low": settings["low"], "high": settings["high"]}
        if low:
            findings.append(self._low(record, low, settings, steps, evidence))
        if high:
            findings.append(
                Finding(
                    code="update-ratio-high",
                    severity="warning",
                    title=f"Huge updates in {len(high)} layer(s): ||update||/||weight|| up to {compact(max(high.values()))}",
                    message=(
                        f"Each optimizer step changes {name_list(list(high))} by a median of "
                        + ", ".join(compact(v) for v in list(high.values())[:6])
                        + f" of their weight norm, above {compact(settings['high'])} (healthy is around 1e-3): the "
                        "weights are rewritten every step, so training is unstable and can diverge."
                    ),
                    recommendation=(
                        "Lower the learning rate (try 10x lower), add a warm-up, and clip the gradient norm with "
                        "torch.nn.utils.clip_grad_norm_."
                    ),
                    snippet=(
                        lr_scale_snippet(0.1) + "\n"
                        "# warm-up: call scheduler.step() after each optimizer.step()\n"
                        "scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=100)"
                    ),
                    layers=list(high),
                    steps=steps,
                    evidence={"median_update_ratio": high, **evidence},
                )
            )
        return findings


    def _low(
        self, record: RunRecord, low: dict[str, float], settings: Mapping[str, Any], steps: list[int], evidence: dict
    ) -> Finding:
        # A gradient of exactly 0 (dead units above, or no path to the loss) is not a learning-rate problem.
        stalled = [n for n in low if median_of(record, "grad_norm", n) == 0]
        message = (
            f"Each optimizer step changes {name_list(list(low))} by a median of "
            + ", ".join(compact(v) for v in list(low.values())[:6])
            + f" of their weight norm, below {compact(settings['low'])} (healthy is around 1e-3): these layers "
            "barely train."
        )
        if stalled:
            message += (
                f" {name_list(stalled)} get a gradient of exactly 0, so no learning rate would move them: "
                "units after them are dead or cut off from the loss."
            )
        movable = len(stalled) < len(low)
        if movable:
            message += " For the others the learning rate is too low, or too little gradient reaches them."
        if not movable:
            recommendation = (
                "Fix the gradient flow first (see the dead-unit and vanishing-gradient findings); the learning "
                "rate is not the cause here."
            )
        else:
            recommendation = (
                "Raise the learning rate (try 10x), or give these layers their own parameter group with a larger "
                "learning rate; if their gradients are tiny too, fix the gradient flow first (see the "
                "vanishing-gradient and dead-unit findings)."
            )
        return Finding(
            code="update-ratio-low",
            severity="warning",
            title=f"Tiny updates in {len(low)} layer(s): ||update||/||weight|| down to {compact(min(low.values()))}",
            message=message,
            recommendation=recommendation,
            snippet=_param_group_snippet(record, [record.module(n) for n in low if n not in stalled]) if movable else "",
            layers=list(low),
            steps=steps,
            evidence={"median_update_ratio": low, "zero_gradient_layers": stalled, **evidence},
        )


def _started_at_zero(record: RunRecord, name: str) -> bool:
    weights = point_arrays(record, "weight_norm", name)[1]
    return bool(len(weights)) and weights[0] == 0.0


def _param_group_snippet(record: RunRecord, modules: list[ModuleInfo]) -> str:
    """The slow layers' parameters in their own group with 10x the learning rate (what `--try-fixes` applies)."""
    return slow_params_snippet([p for m in modules for p in m.params], 10)
