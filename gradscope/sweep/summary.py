"""`ConfigSummary`: the numbers a sweep reports for one configuration, read from its RunRecord.

"Hidden layer l" is block l of the network; its backprop signal is the backprop_norm of act<l>
(||dLoss/d(output of the activation)||) and its gradient RMS is the grad_rms of fc<l>.
"init" values come from recorded step 0, whose gradients are computed from the initial weights;
"final" values from the last recorded step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

from ..decay import decay_per_layer, first_last_ratio
from ..errors import UnknownSeriesError
from ..io import from_json_value, to_json_value
from ..record import RunRecord, Value
from .config import SweepConfig

# A network "trained" when its final training loss is below this fraction of both its first loss
# and the chance loss (a network that only learned the class frequencies did not train); it
# "diverged" when it ends above its first loss or at a loss that is not finite.
TRAINED_FRACTION = 0.95
TRAINED, STALLED, DIVERGED, FAILED = "trained", "did not train", "diverged", "failed"


@dataclass
class LayerProfile:
    """One statistic per hidden layer, first block first, at initialisation and after training."""

    init: list[Value] = field(default_factory=list)
    final: list[Value] = field(default_factory=list)


@dataclass
class ConfigSummary:
    config: SweepConfig
    hidden_layers: list[str] = field(default_factory=list)  # act1 ... act<depth>
    backprop: LayerProfile = field(default_factory=LayerProfile)  # ||dL/d act_l||
    grad_rms: LayerProfile = field(default_factory=LayerProfile)  # grad RMS of fc_l
    sparsity: LayerProfile = field(default_factory=LayerProfile)  # fraction of exact zeros in act_l
    first_last_ratio_init: Value = None  # backprop(act1) / backprop(act<depth>) at step 0
    first_last_ratio_final: Value = None
    decay_factor_init: Value = None  # see fit_decay_factor
    decay_factor_final: Value = None
    first_loss: Value = None  # the training loss logged at step 0, from the initial weights
    chance_loss: Value = None  # the loss of predicting the class frequencies (SweepData.chance_loss)
    train_loss: Value = None  # eval mode, whole training set, after the last step
    train_accuracy: Value = None
    val_loss: Value = None
    val_accuracy: Value = None
    steps_done: int = 0
    seconds: float = 0.0
    error: Optional[str] = None  # why training stopped early (non-finite loss, an exception)

    @property
    def outcome(self) -> Optional[str]:
        """TRAINED, STALLED, DIVERGED or FAILED (see TRAINED_FRACTION); None when not measured."""
        if self.train_loss is not None and not math.isfinite(self.train_loss):
            return DIVERGED
        if self.error:
            return FAILED
        if self.train_loss is None or self.first_loss is None:
            return None
        if self.train_loss > self.first_loss:
            return DIVERGED
        floor = self.first_loss if self.chance_loss is None else min(self.first_loss, self.chance_loss)
        return TRAINED if self.train_loss < TRAINED_FRACTION * floor else STALLED

    def first_last_bound(self, when: str = "init") -> Value:
        """Upper bound of a first/last ratio measured as exactly 0 (see underflow_bound), else None."""
        return underflow_bound(getattr(self.backprop, when))

    @property
    def generalization_gap(self) -> Value:
        """Validation loss minus training loss after training (bigger: more overfitting)."""
        if self.val_loss is None or self.train_loss is None:
            return None
        return self.val_loss - self.train_loss

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["config"] = self.config.to_dict()
        return to_json_value(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ConfigSummary":
        data = from_json_value(dict(data))
        data["config"] = SweepConfig.from_dict(data["config"])
        for name in ("backprop", "grad_rms", "sparsity"):
            data[name] = LayerProfile(**data[name])
        return cls(**data)


# The sweep's name for it since its first release; how the sweep's use differs from the diagnosis's: see decay.py.
fit_decay_factor = decay_per_layer


def underflow_bound(signal: Sequence[Value]) -> Value:
    """What a first/last ratio measured as 0 is known to be below, or None when it is not 0.

    In a deep sigmoid stack the first layers' backprop signal underflows float32 and is recorded
    as 0 (the squares inside the norm fall below float32's range first, near a signal of 1e-21,
    well before 1e-38). Those layers lie further down the decaying chain than the smallest signal
    still measured, so their ratio to the last layer is below that signal's ratio; print that
    bound, never 0.
    """
    if not signal or signal[0] != 0 or signal[-1] is None or not signal[-1] > 0:
        return None
    measured = [v for v in signal if v is not None and v > 0]
    return float(min(measured) / signal[-1])


def summarize(
    config: SweepConfig,
    record: Optional[RunRecord],
    hidden_layers: list[str],
    hidden_linears: list[str],
    metrics: dict[str, Value],
    steps_done: int,
    seconds: float,
    error: Optional[str],
) -> ConfigSummary:
    """Gather the per-layer profiles and derived numbers of one trained configuration."""
    summary = ConfigSummary(config=config, hidden_layers=list(hidden_layers), steps_done=steps_done,
                            seconds=seconds, error=error, **metrics)
    if record is None or not record.steps:
        return summary
    summary.first_loss = first_logged_loss(record)
    summary.backprop = _profile(record, "backprop_norm", hidden_layers)
    summary.grad_rms = _profile(record, "grad_rms", hidden_linears)
    summary.sparsity = _profile(record, "act_sparsity", hidden_layers)
    summary.first_last_ratio_init = first_last_ratio(summary.backprop.init)
    summary.first_last_ratio_final = first_last_ratio(summary.backprop.final)
    summary.decay_factor_init = fit_decay_factor(summary.backprop.init)
    summary.decay_factor_final = fit_decay_factor(summary.backprop.final)
    return summary


def first_logged_loss(record: RunRecord) -> Value:
    """The training loss the sweep logged first (at step 0, from the initial weights), or None."""
    try:
        _, losses = record.scalar_series("loss")
    except UnknownSeriesError:
        return None
    return losses[0] if losses else None


def _profile(record: RunRecord, stat: str, names: list[str]) -> LayerProfile:
    first_is_init = record.steps[0] == 0
    init, final = [], []
    for name in names:
        init.append(record.series(stat, name)[0] if first_is_init else None)
        final.append(record.last(stat, name))
    return LayerProfile(init=init, final=final)
