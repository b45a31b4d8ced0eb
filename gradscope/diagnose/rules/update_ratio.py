"""Update-to-weight ratio: how much of each layer one optimizer step changes.

Around 1e-3 per step is the usual healthy range; far below, the layer barely moves (learning
rate too low for it, or almost no gradient reaches it); far above, each step rewrites a large
part of the weights and training is unstable.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ...record import ModuleInfo, RunRecord
from ..advice import lr_scale_snippet, slow_params_snippet
from ..finding import Finding
from ..numbers import compact, name_list
from ..reading import loss_trend, median_of, point_arrays
from ..rule import Rule


class UpdateRatio(Rule):
    name = "update_ratio"
    code = "update-ratio"  # its findings are "update-ratio-low" and "update-ratio-high"
    label = "Update-to-weight ratios"
    needs = ("update_ratio",)
    config_keys = ("low", "high")

    def check(self, record: RunRecord, settings: Mapping[str, Any]) -> list[Finding]:
        return self.check_after(record, settings, ())

    def check_after(self, record: RunRecord, settings: Mapping[str, Any], earlier: Sequence[Finding]) -> list[Finding]:
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
            findings.append(self._low(record, low, settings, steps, evidence, {f.code for f in earlier}))
        if high:
            findings.append(self._high(record, high, settings, steps, evidence))
        return findings

    def _high(
        self, record: RunRecord, high: dict[str, float], settings: Mapping[str, Any], steps: list[int], evidence: dict
    ) -> Finding:
        loss = loss_trend(record)
        # Large relative steps on a loss that ends below where it started are an aggressive
        # schedule that works (small embeddings at the word-language-model example's lr=20), not
        # instability: said, but not warned about.
        learning = loss is not None and loss.fell
        message = (
            f"Each optimizer step changes {name_list(list(high))} by a median of "
            + ", ".join(compact(v) for v in list(high.values())[:6])
            + f" of their weight norm, above {compact(settings['high'])} (healthy is around 1e-3)"
        )
        if learning:
            message += (
                f", yet {loss.describe()}: the steps are large but training still makes progress. If the loss "
                "later stalls or jumps, these layers are the first suspects."
            )
        else:
            message += ": the weights are rewritten every step, so training is unstable and can diverge"
            message += f" ({loss.describe()})." if loss is not None else "."
        return Finding(
            code="update-ratio-high",
            severity="info" if learning else "warning",
            title=f"Huge updates in {len(high)} layer(s): ||update||/||weight|| up to {compact(max(high.values()))}",
            message=message,
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
            evidence={
                "median_update_ratio": high,
                **evidence,
                **({"loss_first": loss.first, "loss_late": loss.late} if loss is not None else {}),
            },
        )

    def _low(
        self,
        record: RunRecord,
        low: dict[str, float],
        settings: Mapping[str, Any],
        steps: list[int],
        evidence: dict,
        found: set[str],
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
        related = [label for code, label in _GRADIENT_FLOW_FINDINGS if code in found]
        see = f" (see the {' and '.join(related)} finding{'s' if len(related) > 1 else ''})" if related else ""
        if not movable:
            recommendation = (
                f"Fix the gradient flow first{see}: a gradient of exactly 0 means the units after these layers "
                "never pass gradient back (dead ReLUs, an output that is detached or unused), so the learning "
                "rate is not the cause here."
            )
        else:
            recommendation = (
                "Raise the learning rate (try 10x), or give these layers their own parameter group with a larger "
                f"learning rate; if their gradients are tiny too, fix the gradient flow first{see}."
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


# Findings about gradients that do not reach a layer, which a tiny update can follow from.
_GRADIENT_FLOW_FINDINGS = (
    ("vanishing-gradients", "vanishing-gradient"),
    ("dead-relu", "dead-unit"),
    ("saturation", "saturation"),
    ("no-gradient", "no-gradient"),
)


def _started_at_zero(record: RunRecord, name: str) -> bool:
    weights = point_arrays(record, "weight_norm", name)[1]
    return bool(len(weights)) and weights[0] == 0.0


def _param_group_snippet(record: RunRecord, modules: list[ModuleInfo]) -> str:
    """The slow layers' parameters in their own group with 10x the learning rate (what `--try-fixes` applies)."""
    return slow_params_snippet([p for m in modules for p in m.params], 10)
