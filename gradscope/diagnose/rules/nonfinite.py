"""Non-finite values: where NaN/Inf first appeared, forwards and backwards.

Once one NaN reaches the weights through an optimizer step, every later output is NaN, so
only the first step and the first layer say where it came from: in forward order for
activations (the module that produced it), in backward order for gradients (where the
backward pass first carried it).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from ...record import RunRecord
from ..finding import Finding
from ..numbers import name_list
from ..reading import point_arrays
from ..rule import Rule

# Parameter gradients only: backprop_norm is measured on the loss as GradScaler scaled it, where
# the norm of a finite signal can overflow without anything being wrong with the model.
_GRADIENT_STATS = ("grad_nonfinite", "grad_norm")


class NonFinite(Rule):
    name = "nonfinite"
    code = "nonfinite"
    label = "Non-finite values"
    needs = (("act_nonfinite", "grad_nonfinite", "grad_norm"),)
    config_keys = ()

    def check(self, record: RunRecord, settings: Mapping[str, Any]) -> list[Finding]:
        forward = _bad_steps(record, ("act_nonfinite",))
        backward = _bad_steps(record, _GRADIENT_STATS)
        loss_steps = _nonfinite_scalar_steps(record, "loss")
        # On a step GradScaler skipped, an overflow is its business (the amp-overflow rule reports it).
        skipped = set(record.skipped_steps)
        seen = {s for steps in (*forward.values(), *backward.values()) for s in steps} | set(loss_steps)
        all_steps = sorted(seen - skipped)
        if not all_steps:
            return []
        first = all_steps[0]
        loss_steps = [s for s in loss_steps if s not in skipped]
        order = record.layers  # forward order
        fwd_at_first = [n for n in order if first in forward.get(n, ())]
        bwd_at_first = [n for n in reversed(order) if first in backward.get(n, ())]
        evidence: dict[str, Any] = {"first_step": first, "steps_with_nonfinite": len(all_steps)}
        parts = []
        if fwd_at_first:
            evidence["first_forward_layer"] = fwd_at_first[0]
            parts.append(
                f"in the forward pass, `{fwd_at_first[0]}` is the first module (in forward order) whose output held "
                "NaN/Inf" + (f"; after it {name_list(fwd_at_first[1:])}" if len(fwd_at_first) > 1 else "")
            )
        if bwd_at_first:
            evidence["first_backward_layer"] = bwd_at_first[0]
            parts.append(
                f"in the backward pass, `{bwd_at_first[0]}` is the first module (in backward order) with a "
                "non-finite gradient"
            )
        if loss_steps:
            evidence["first_nonfinite_loss_step"] = loss_steps[0]
            parts.append(f"the logged loss was first non-finite at step {loss_steps[0]}")
        if not fwd_at_first and not bwd_at_first:
            parts.append("no module's statistics were non-finite at that step (record more often, every=1, to see where)")
        layers_at_first = [n for n in order if n in set(fwd_at_first) | set(bwd_at_first)]
        origin = fwd_at_first[0] if fwd_at_first else (bwd_at_first[0] if bwd_at_first else None)
        return [
            Finding(
                code=self.code,
                severity="error",
                title=f"NaN/Inf first appeared at step {first}" + (f" in `{origin}`" if origin is not None else ""),
                message=(
                    f"Non-finite values first appeared at step {first}: " + "; ".join(parts) + ". After one NaN "
                    "gradient reaches an optimizer step the weights are NaN and every later value is too, so "
                    "look at this first place."
                ),
                recommendation=_recommendation(fwd_at_first, order),
                snippet=_SNIPPET,
                layers=layers_at_first,
                steps=all_steps,
                evidence=evidence,
            )
        ]


def _bad_steps(record: RunRecord, stats: tuple[str, ...]) -> dict[str, list[int]]:
    """Per layer, the recorded steps where any of `stats` shows a NaN/Inf."""
    bad: dict[str, set[int]] = {}
    for name in record.layers:
        for stat in stats:
            steps, values = point_arrays(record, stat, name, finite_only=False)
            with np.errstate(invalid="ignore"):
                flagged = values > 0 if stat.endswith("nonfinite") else ~np.isfinite(values)
            if flagged.any():
                bad.setdefault(name, set()).update(steps[flagged].tolist())
    return {name: sorted(steps) for name, steps in bad.items()}


def _nonfinite_scalar_steps(record: RunRecord, name: str) -> list[int]:
    return [step for step, value in record.scalars.get(name, []) if not math.isfinite(value)]


def _recommendation(forward_first: list[str], order: list[str]) -> str:
    text = (
        "Find the operation that produces the first NaN/Inf: torch.autograd.set_detect_anomaly(True) names it "
        "(debugging only, it is slow). Usual causes: log/sqrt/division of values that reach 0 or go negative "
        "(add a small eps or clamp), a learning rate so high that the weights overflow (lower it, clip gradients "
        "with torch.nn.utils.clip_grad_norm_), or NaN in the input data."
    )
    if forward_first and order and forward_first[0] == order[0]:
        text += f" The very first module `{forward_first[0]}` already produced NaN/Inf: check the input batches."
    return text


_SNIPPET = """torch.autograd.set_detect_anomaly(True)  # debugging only: names the op that made the NaN

assert torch.isfinite(x).all(), "input batch holds NaN/Inf"
out = torch.log(p.clamp_min(1e-8))  # instead of torch.log(p)
loss.backward()
torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
optimizer.step()"""
