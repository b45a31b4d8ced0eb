"""GradScaler-skipped steps: an AMP overflow is reported as such, never as exploding gradients.

torch.amp.GradScaler multiplies the loss by a large scale so small float16 gradients do not
underflow; when that makes a gradient overflow, it skips optimizer.step() and halves the
scale. A few skipped steps, mostly at the start, are how it finds its scale.
"""

from __future__ import annotations

from typing import Any, Mapping

from ...record import RunRecord
from ..finding import Finding
from ..numbers import percent
from ..rule import Rule


class AmpOverflow(Rule):
    name = "amp_overflow"
    code = "amp-overflow"
    label = "GradScaler-skipped steps"
    config_keys = ("warn_fraction",)

    def check(self, record: RunRecord, settings: Mapping[str, Any]) -> list[Finding]:
        skipped = sorted(record.skipped_steps)
        if not skipped:
            return []
        fraction = len(skipped) / max(1, len(record.steps))
        frequent = fraction > settings["warn_fraction"]
        message = (
            f"GradScaler skipped {len(skipped)} of {len(record.steps)} recorded steps ({percent(fraction)}), first at "
            f"step {skipped[0]}: the scaled gradients overflowed in reduced precision, so the optimizer step was "
            "skipped and the scale lowered. These steps are left out of the gradient checks."
        )
        if frequent:
            message += " This many skips mean the model is barely being updated."
            recommendation = (
                "Look for an operation that overflows in float16 even without scaling (run it in float32, or use "
                "bfloat16 autocast, which has float32's range), and lower the learning rate if the gradients really grow."
            )
        else:
            recommendation = "Nothing to do: occasional skips, mostly early, are how GradScaler finds its scale."
        return [
            Finding(
                code=self.code,
                severity="warning" if frequent else "info",
                title=f"GradScaler skipped {len(skipped)} step(s) (AMP overflow)",
                message=message,
                recommendation=recommendation,
                snippet=_BFLOAT16_SNIPPET if frequent else "",
                steps=skipped,
                evidence={
                    "skipped_steps": len(skipped),
                    "recorded_steps": len(record.steps),
                    "skipped_fraction": fraction,
                    "warn_fraction": settings["warn_fraction"],
                    "first_skipped_step": skipped[0],
                },
            )
        ]


_BFLOAT16_SNIPPET = """with torch.autocast(device_type="cuda", dtype=torch.bfloat16):  # float32's range: no scaler needed
    loss = loss_fn(model(x), y)"""
