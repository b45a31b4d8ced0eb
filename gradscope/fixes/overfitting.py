"""Fixes for overfitting: dropout after the hidden layers, weight decay, and early stopping read from the curve."""

from __future__ import annotations

from torch import nn

from ..diagnose.advice import dropout_lines, weight_decay_snippet
from ..diagnose.config import Config
from ..diagnose.finding import Finding
from ..diagnose.numbers import name_list
from ..diagnose.rules.overfitting import CurvePoint, aligned_curve, dropout_places
from ..record import RunRecord
from .fix import FindingMetrics, Fix, Metrics
from .plan import FixPlan, NotApplicable

FINDING = "overfitting"


def gap(point: CurvePoint) -> float:
    """(validation - training loss) / validation loss: the rule's relative gap."""
    return (point.val - point.train) / abs(point.val) if point.val != 0 else 0.0


def measure(record: RunRecord, finding: Finding, config: Config) -> Metrics:
    """The train/validation gap at the last validation point, and where the validation loss was best."""
    curve = aligned_curve(record)
    if not curve:
        return {"relative_gap": None, "best_val_step": None, "best_val_loss": None}
    best = min(curve, key=lambda p: p.val)
    return {"relative_gap": gap(curve[-1]), "best_val_step": float(best.step), "best_val_loss": best.val}


METRICS = FindingMetrics(key="relative_gap", higher_is_better=False, scale="linear", measure=measure)


class Dropout(Fix):
    id = "dropout"
    finding = FINDING
    summary = "Dropout after the hidden layers"

    def plan(self, record: RunRecord, finding: Finding, config: Config, model: nn.Module) -> FixPlan:
        if any(m.type.startswith("Dropout") or m.type == "AlphaDropout" for m in record.modules):
            raise NotApplicable("the model already has dropout; the advice is to raise its p, which is not tried")
        places = dropout_places(record)
        if not places:
            raise NotApplicable("the model has no hidden activation modules to put dropout after")
        p = config.section("overfitting")["suggested_dropout"]
        return self.new_plan(
            f"Add nn.Dropout(p={p:g}) after {name_list([m.name for m in places])} (p drops units: keep_prob = "
            f"{1 - p:g}); the validation loss is computed in eval() mode, where dropout is off.",
            model_code="\n".join(dropout_lines(places, p, limit=None)),
            layers=[m.name for m in places],
        )


class WeightDecay(Fix):
    id = "weight-decay"
    finding = FINDING
    summary = "weight decay"

    def plan(self, record: RunRecord, finding: Finding, config: Config, model: nn.Module) -> FixPlan:
        decay = config.section("overfitting")["suggested_weight_decay"]
        return self.new_plan(
            f"Set weight_decay={decay:g} in every parameter group (an L2 penalty that keeps the weights small).",
            optimizer_code=weight_decay_snippet(decay),
        )


class EarlyStopping(Fix):
    """Not retrained: the base run's own curve says what stopping at the best validation point gives."""

    id = "early-stopping"
    finding = FINDING
    summary = "early stopping"

    def plan(self, record: RunRecord, finding: Finding, config: Config, model: nn.Module) -> FixPlan:
        curve = aligned_curve(record)
        if not curve:
            raise NotApplicable("no validation loss was logged")
        best = min(curve, key=lambda p: p.val)
        return self.new_plan(
            f"Keep the weights from step {best.step}, where the validation loss was lowest (read from this run's "
            "curve; nothing is retrained).",
            loop_code=(
                f"# the validation loss was best at step {best.step}: save the weights whenever it improves\n"
                "if val_loss < best_val:\n"
                "    best_val = val_loss\n"
                '    torch.save(model.state_dict(), "best.pt")'
            ),
            retrain=False,
        )

    @staticmethod
    def metrics_at_best(record: RunRecord) -> Metrics:
        """The base run's metrics had it stopped at its best validation point."""
        curve = aligned_curve(record)
        best = min(curve, key=lambda p: p.val)
        return {
            "relative_gap": gap(best),
            "best_val_step": float(best.step),
            "best_val_loss": best.val,
            "final_loss": best.train,
            "val_loss": best.val,
        }


FIXES = (Dropout(), WeightDecay(), EarlyStopping())
