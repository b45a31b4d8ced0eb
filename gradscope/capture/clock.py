"""The step clock: where a training step begins and ends, decided from events alone.

The hooks report what happened (a training forward, a gradient accumulated, a backward
finished, the optimizer stepped, gradients were thrown away) and the clock answers what it
means: step N ended, was skipped, or never was a step, and whether step N is recorded. It
knows nothing of torch, so every awkward loop (gradient accumulation, no optimizer, AMP skips,
activation checkpointing, eval passes, every=N) can be tested by feeding it event sequences.

A step is what the optimizer did. With an optimizer, a step ends when it steps. Without one,
each backward is a step. A backward whose gradients are discarded before the optimizer steps is
a step GradScaler skipped when the scaler says so; otherwise it was never a step (another
network's loss flowed through this one, as in a GAN) and what was measured for it is void.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Outcome(Enum):
    ENDED = "ended"  # the optimizer stepped (or, without one, a backward finished)
    SKIPPED = "skipped"  # GradScaler skipped the optimizer step: non-finite gradients
    VOID = "void"  # gradients discarded without a step: not a step, the step number is not used


@dataclass(frozen=True)
class StepEnd:
    """What an event concluded about the step in progress."""

    step: int
    outcome: Outcome
    recorded: bool
    # A step with a backward but no forward that any hook saw (compiled code without hooks),
    # and whether it is the first step since attach (its forward may have run before attach).
    forward_unseen: bool = False
    first_since_attach: bool = False

    @property
    def skipped(self) -> bool:
        return self.outcome is Outcome.SKIPPED

    @property
    def void(self) -> bool:
        return self.outcome is Outcome.VOID


class StepClock:
    """Numbers the training steps of one watched network and says which ones are recorded."""

    def __init__(self, every: int = 1, has_optimizer: bool = True) -> None:
        self.every = every
        self.has_optimizer = has_optimizer
        self.step = 0  # the step in progress
        self.recording = self._records(0)
        self._attached_at = 0
        self._start_step()

    # ---- the one place that decides what is recorded ------------------------------------------
    def _records(self, step: int) -> bool:
        """Whether `step` is recorded; decided once, when the step begins."""
        return step % self.every == 0

    # ---- events ---------------------------------------------------------------------------------------
    def attach(self) -> None:
        self._attached_at = self.step
        self._start_step()

    def forward(self, training: bool) -> None:
        """The model's forward was called; `training`: in train mode with grad enabled."""
        self._forward_seen = True
        if training:
            self._training_forward = True

    def module_forward(self, name: str, training: bool, during_backward: bool) -> bool:
        """A watched module ran with grad enabled; False for a recompute that activation
        checkpointing does inside the backward of a forward already seen this step."""
        if during_backward and name in self._forwarded:
            return False
        # Frameworks need not call the root: Lightning's training_step calls `self.net(x)`.
        self._forward_seen = True
        if training:
            self._forwarded.add(name)
            self._training_forward = True
        return True

    def param_grad(self) -> bool:
        """A backward accumulated a parameter's gradient; True for the step's first."""
        first = not self._backward
        self._backward = True
        return first

    def backward_end(self) -> StepEnd:
        """A backward finished (only reported without an optimizer: then it ends the step)."""
        return self._end(Outcome.ENDED)

    def optimizer_pre_step(self) -> None:
        """The optimizer is about to step (the gradients are final)."""

    def optimizer_post_step(self) -> StepEnd:
        return self._end(Outcome.ENDED)

    def gradients_discarded(self, scaler_skipped: bool) -> StepEnd:
        """The gradients of a backward were consumed without an optimizer step. With
        `scaler_skipped` GradScaler skipped the step; otherwise it was no step at all."""
        return self._end(Outcome.SKIPPED if scaler_skipped else Outcome.VOID)

    def detach(self) -> None:
        self._start_step()

    # ---- questions --------------------------------------------------------------------------------------
    @property
    def awaits_optimizer(self) -> bool:
        """A backward happened and the optimizer has not stepped since: its gradients may yet be
        discarded (ask `gradients_discarded` when they are)."""
        return self.has_optimizer and self._backward

    @property
    def forward_seen(self) -> bool:
        """Any forward of the model since the step began."""
        return self._forward_seen

    @property
    def log_step(self) -> int:
        """The step a logged scalar belongs to: the step in progress once its training forward
        ran, else the step just taken."""
        return self.step if (self._training_forward or self.step == 0) else self.step - 1

    # ---- internals ----------------------------------------------------------------------------------------
    def _end(self, outcome: Outcome) -> StepEnd:
        step = self.step
        end = StepEnd(
            step=step,
            outcome=outcome,
            recorded=self.recording,
            forward_unseen=outcome is Outcome.ENDED and self._backward and not self._forward_seen,
            first_since_attach=step == self._attached_at,
        )
        if outcome is not Outcome.VOID:
            self.step += 1
            self.recording = self._records(self.step)
        self._start_step()
        return end

    def _start_step(self) -> None:
        self._forward_seen = False  # any forward, training or not
        self._training_forward = False
        self._backward = False
        self._forwarded: set[str] = set()
