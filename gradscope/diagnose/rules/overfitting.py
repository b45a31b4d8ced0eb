"""Overfitting: the training loss keeps falling while the validation loss rises (or stays far above).

The model is fitting the training samples' noise instead of what carries over to new data;
regularisation (dropout, an L2 penalty), stopping at the best validation point and more
data all push it back towards what generalises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from ...record import ModuleInfo, RunRecord
from ..advice import code, dropout_lines, optimizer_expr
from ..finding import Finding
from ..numbers import compact, name_list
from ..reading import hidden_modules, module_expr
from ..rule import Rule


@dataclass
class CurvePoint:
    step: int
    val: float
    train: float  # mean training loss logged since the previous validation point


class Overfitting(Rule):
    name = "overfitting"
    code = "overfitting"
    label = "Signs of overfitting"
    needs_scalars = ("loss", "val_loss")
    config_keys = ("rising_points", "min_val_rise", "max_relative_gap", "suggested_dropout", "suggested_weight_decay")

    def check(self, record: RunRecord, settings: Mapping[str, Any]) -> list[Finding]:
        curve = aligned_curve(record)
        if len(curve) < 2:
            return []
        best_index = min(range(len(curve)), key=lambda i: curve[i].val)
        best, last = curve[best_index], curve[-1]
        after = curve[best_index + 1 :]
        rise = (last.val - best.val) / abs(best.val) if best.val != 0 else math.inf
        rising = (
            len(after) >= settings["rising_points"]
            and rise >= settings["min_val_rise"]
            and last.train < best.train  # the training loss kept falling meanwhile
        )
        gap = (last.val - last.train) / abs(last.val) if last.val != 0 else 0.0
        wide = gap > settings["max_relative_gap"]
        if not (rising or wide):
            return []
        reasons = []
        if rising:
            reasons.append(
                f"the validation loss rose from its best {compact(best.val)} at step {best.step} to "
                f"{compact(last.val)} at step {last.step} over {len(after)} validation points, while the training "
                f"loss fell from {compact(best.train)} to {compact(last.train)}"
            )
        if wide:
            reasons.append(
                f"at step {last.step} the training loss {compact(last.train)} is {gap:.0%} below the validation "
                f"loss {compact(last.val)}"
            )
        p = settings["suggested_dropout"]
        decay = settings["suggested_weight_decay"]
        places = dropout_places(record)
        dropouts = [m for m in record.modules if m.type.startswith("Dropout") or m.type == "AlphaDropout"]
        if dropouts:
            where = f"raise p of the existing {name_list([m.name for m in dropouts])} (by 0.2, say)"
        elif places:
            where = f"add nn.Dropout(p={p:g}) after {name_list([m.name for m in places])}"
        else:
            where = f"add nn.Dropout(p={p:g}) before the last layer"
        recommendation = (
            f"Dropout: {where}; PyTorch's p is the probability of dropping a unit, so p={p:g} means keep_prob="
            f"{1 - p:g}. It is only active in model.train() mode: call model.eval() when computing the "
            f"validation loss and model.train() before training steps. Weight decay: pass weight_decay={decay:g} "
            "to the optimizer, which adds lambda*theta to each gradient, the gradient of the L2 penalty "
            "(lambda/2)*||theta||^2 that keeps the weights small (a penalty written lambda*||theta||^2 means "
            "weight_decay=2*lambda; with Adam prefer AdamW). Early stopping: the "
            f"validation loss was best at step {best.step}; keep the weights from there. More training data or "
            "data augmentation (random crops, flips, noise) helps most of all."
        )
        return [
            Finding(
                code=self.code,
                severity="warning",
                title=f"Overfitting: validation loss best at step {best.step}, then "
                + ("rising" if rising else f"{gap:.0%} above training loss"),
                message="The model fits the training data better and better but not new data: " + "; ".join(reasons) + ".",
                recommendation=recommendation,
                snippet=_snippet(record, places, dropouts, p, decay, best.step),
                layers=[m.name for m in (dropouts or places)],
                steps=[pt.step for pt in ([best] + after if rising else [last])],
                evidence={
                    "best_val_step": best.step,
                    "best_val_loss": best.val,
                    "last_val_loss": last.val,
                    "last_train_loss": last.train,
                    "val_rise": rise,
                    "points_after_best": len(after),
                    "relative_gap": gap,
                    "rising_points": settings["rising_points"],
                    "min_val_rise": settings["min_val_rise"],
                    "max_relative_gap": settings["max_relative_gap"],
                },
            )
        ]


def aligned_curve(record: RunRecord) -> list[CurvePoint]:
    """Each finite validation point with the mean training loss logged since the previous one."""
    train = [(s, v) for s, v in record.scalars.get("loss", []) if math.isfinite(v)]
    curve: list[CurvePoint] = []
    previous = -math.inf
    for step, val in record.scalars.get("val_loss", []):
        if not math.isfinite(val):
            continue
        window = [v for s, v in train if previous < s <= step]
        if not window:  # validation logged more often than training: use the latest training loss
            window = [v for s, v in train if s <= step][-1:]
        if window:
            curve.append(CurvePoint(step, val, sum(window) / len(window)))
        previous = step
    return curve


def dropout_places(record: RunRecord) -> list[ModuleInfo]:
    """Hidden activations followed by another layer: the classic place for dropout."""
    return [m for m in hidden_modules(record) if m.activation is not None]


def _snippet(
    record: RunRecord, places: list[ModuleInfo], dropouts: list[ModuleInfo], p: float, decay: float, best_step: int
) -> str:
    lines = []
    if dropouts:
        for m in dropouts[:12]:
            expr = module_expr(m.name)
            lines.append(f"{expr}.p = min(0.8, {expr}.p + 0.2)  # p drops units; keep_prob = 1 - p")
    else:
        lines += dropout_lines(places, p)
    optimizer = optimizer_expr(record)
    if optimizer == "torch.optim.Adam":
        optimizer = "torch.optim.AdamW"  # Adam's weight_decay is coupled to its adaptive scaling
    lines += [
        f"optimizer = {optimizer}(model.parameters(), lr=lr, weight_decay={decay:g})",
        "",
        f"# early stopping: the validation loss was best at step {best_step}",
        "model.eval()  # dropout off for validation",
        "with torch.no_grad():",
        "    val_loss = loss_fn(model(x_val), y_val).item()",
        "model.train()",
        "if val_loss < best_val:",
        "    best_val = val_loss",
        '    torch.save(model.state_dict(), "best.pt")',
    ]
    return code("\n".join(lines))
