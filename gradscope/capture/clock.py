"""The step clock: where a training step begins and ends, decided from events alone.

The hooks report what happened (a training forward, a gradient accumulated, a backward
finished, the optimizer stepped, gradients were thrown away) and the clock answers what it
means: step N ended, was skipped, or never was a step, and whether step N is recorded. It
knows nothing of torch, so every awkward loop (gradient accumulation, no optimizer, AMP skips,
activation checkpointing, eval passes, every=N) can be tested by feeding it event sequences.
With `budget=` the interval between recorded steps is chosen from measured seconds
(`IntervalChooser`), which the Watcher feeds in: the choice is tested the same way, with
made-up timings.

A step is what the optimizer did. With an optimizer, a step ends when it steps. Without one,
each backward is a step. A backward whose gradients are discarded before the optimizer steps is
a step GradScaler skipped when the scaler says so; otherwise it was never a step (another
network's loss flowed through this one, as in a GAN) and what was measured for it is void.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Optional

from ..errors import ConfigError

MAX_INTERVAL = 1000  # with budget=: record at least every 1000th step, however costly recording is
GROWTH = 4  # with budget=: the most the interval grows by at one decision


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

    def __init__(self, every: int = 1, has_optimizer: bool = True, budget: Optional[float] = None) -> None:
        self.every = every
        self.has_optimizer = has_optimizer
        # budget=: the interval follows the measured cost, `every` is the shortest one allowed
        self.chooser = IntervalChooser(budget, min_interval=every) if budget is not None else None
        self.step = 0  # the step in progress
        self.recording = self._records(0)
        self._attached_at = 0
        self._start_step()

    # ---- the one place that decides what is recorded ------------------------------------------
    def _records(self, step: int) -> bool:
        """Whether `step` is recorded; decided when the step begins (with a budget, again when the
        last step's timings arrive, which is still before this step's first hook)."""
        if self.chooser is not None:
            return self.chooser.records(step)
        return step % self.every == 0

    @property
    def interval(self) -> int:
        """The recording interval in force: `every`, or the one the budget chose."""
        return self.chooser.interval if self.chooser is not None else self.every

    @property
    def timing(self) -> bool:
        """Whether gradscope should time its own work in the step in progress (budget= only)."""
        return self.chooser is not None and self.chooser.times(self.step)

    def step_timed(self, wall_seconds: float, own_seconds: Optional[float]) -> None:
        """The last step that ended (not a void one) took `wall_seconds`, end to end, of which
        gradscope's hooks took `own_seconds` (None: not timed). Budget only: may change whether
        the step in progress is recorded (it has not begun: no hook of it has run)."""
        if self.chooser is None:
            return
        self.chooser.step_ended(self.step - 1, wall_seconds, own_seconds)
        self.recording = self._records(self.step)

    def agree_interval(self, interval: int) -> None:
        """Use `interval` from now on (budget, several ranks: the longest any rank chose, so that
        every rank records the same steps); like `step_timed`, called between steps."""
        if self.chooser is not None:
            self.chooser.use_interval(interval)
            self.recording = self._records(self.step)

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


def check_budget(budget: object) -> None:
    """budget= is None or a fraction of the step time in (0, 1]; ConfigError names the field."""
    if budget is None:
        return
    number = isinstance(budget, (int, float)) and not isinstance(budget, bool)
    if not (number and math.isfinite(budget) and 0 < budget <= 1):  # type: ignore[arg-type]
        raise ConfigError(
            f"`budget` must be a number above 0 and at most 1 (the fraction of the training step time gradscope "
            f"may add, e.g. 0.02 for 2 %), got {budget!r}."
        )


class IntervalChooser:
    """Chooses how often to record so that gradscope slows the training loop by at most `budget`
    (a fraction of the step time) on average.

    Fed each step's wall time and, on the steps it asks to time (`times`), gradscope's own time
    in it. A recorded step costs gradscope C seconds; a step between recorded steps costs B (the
    hooks still run, doing little); a plain step takes T. Recording every Nth step slows the loop
    by (C + (N - 1) B) / (N T), which is at most `budget` when N >= (C - B) / (budget T - B).
    C, B and T are medians of the last few measurements (a garbage collection or a checkpoint
    save in one step moves nothing); step 0's cost counts only until another recorded step's is
    known (a first call allocates and warms up). The interval rises at once when the cost says so,
    except that it grows at most `GROWTH`-fold per decision (first steps are slow for reasons of
    their own), and
    falls only at a recorded step when the cost has fallen by a fifth, and then at most by half:
    a steady cadence.
    """

    def __init__(self, budget: float, min_interval: int = 1, max_interval: int = MAX_INTERVAL) -> None:
        self.budget = budget
        self.min_interval = min_interval
        self.max_interval = max(max_interval, min_interval)
        self.interval = min_interval
        self.widest = min_interval  # the longest interval that was in force at a recorded step
        self.next_recorded = 0  # step 0 is always recorded
        self.recorded_steps = 0
        self.steps = 0
        self._last_recorded = -2
        self._own: deque[float] = deque(maxlen=5)  # C: gradscope's seconds in a recorded step
        self._between: deque[float] = deque(maxlen=5)  # B: its seconds in a step between recorded ones
        self._plain: deque[float] = deque(maxlen=15)  # T: a step's seconds without gradscope's

    def records(self, step: int) -> bool:
        return step >= self.next_recorded

    def times(self, step: int) -> bool:
        """Recorded steps are timed, and one step between them (what the hooks cost there): the
        second after a recorded step when there is one, since the Watcher drops a layer's
        dead-unit hook once every unit of it has fired, which the first one still pays for."""
        return self.records(step) or step == self._last_recorded + (2 if self.interval > 2 else 1)

    def step_ended(self, step: int, wall: float, own: Optional[float]) -> None:
        recorded = self.records(step)
        self.steps += 1
        if recorded:
            self.recorded_steps += 1
            self.widest = max(self.widest, self.interval)
            if step > 0 and self._last_recorded == 0:
                self._own.clear()  # step 0's cost was that of a first call
            self._last_recorded = step
            self._own.append(own or 0.0)
        elif own is not None:
            self._between.append(own)
        between = statistics.median(self._between) if self._between else 0.0
        self._plain.append(max(wall - (own if own is not None else between), 0.0))
        if own is not None:
            self._choose(between, may_fall=recorded)
        self.next_recorded = self._last_recorded + self.interval

    def use_interval(self, interval: int) -> None:
        self.interval = interval
        self.next_recorded = self._last_recorded + interval

    def _choose(self, between: float, may_fall: bool) -> None:
        own = statistics.median(self._own) if self._own else 0.0
        allowed = self.budget * statistics.median(self._plain)
        if own <= allowed:
            target = 1
        elif allowed <= between:  # the hooks alone cost more than the budget: record as rarely as allowed
            target = self.max_interval
        else:
            target = math.ceil((own - between) / (allowed - between) - 1e-9)
        target = min(max(target, self.min_interval), self.max_interval)
        if target > self.interval:
            self.interval = min(target, GROWTH * self.interval)
        elif may_fall and target < 0.8 * self.interval:
            self.interval = max(target, self.interval // 2, self.min_interval)

    # ---- what the record says about it ---------------------------------------------------------------
    def cost_in_steps(self) -> tuple[float, float]:
        """(C / T, B / T): gradscope's cost in a recorded step and in a step between, in plain steps."""
        plain = statistics.median(self._plain) if self._plain else 0.0
        if plain <= 0:
            return 0.0, 0.0
        own = statistics.median(self._own) if self._own else 0.0
        between = statistics.median(self._between) if self._between else 0.0
        return own / plain, between / plain
