"""The step clock on event sequences alone: no model, no torch.

Each sequence is what the hooks report for one kind of training loop; the clock must say which
steps ended, which GradScaler skipped, which were never steps, and which are recorded.
"""

from __future__ import annotations

import pytest

from gradscope.capture.clock import MAX_INTERVAL, Outcome, StepClock, check_budget
from gradscope.errors import ConfigError


def _plain_step(clock: StepClock, micro_batches: int = 1, params: int = 3):
    """forward + backward per micro-batch, then one optimizer step."""
    for _ in range(micro_batches):
        clock.forward(training=True)
        for _ in range(params):
            clock.param_grad()
    clock.optimizer_pre_step()
    return clock.optimizer_post_step()


def test_plain_steps_end_at_the_optimizer_step_and_are_numbered_from_zero():
    clock = StepClock()
    ends = [_plain_step(clock) for _ in range(3)]
    assert [e.step for e in ends] == [0, 1, 2]
    assert all(e.outcome is Outcome.ENDED and e.recorded for e in ends)
    assert clock.step == 3
    assert not any(e.forward_unseen for e in ends)


def test_gradient_accumulation_is_one_step_per_optimizer_step():
    clock = StepClock()
    ends = [_plain_step(clock, micro_batches=4) for _ in range(2)]
    assert [e.step for e in ends] == [0, 1]
    assert clock.step == 2


def test_without_an_optimizer_each_backward_is_a_step():
    clock = StepClock(has_optimizer=False)
    for expected in range(3):
        clock.forward(training=True)
        clock.param_grad()
        assert not clock.awaits_optimizer  # no optimizer: gradients are never "awaiting" one
        end = clock.backward_end()
        assert (end.step, end.outcome) == (expected, Outcome.ENDED)
    assert clock.step == 3


def test_a_step_grad_scaler_skipped_takes_a_step_number_and_is_marked_skipped():
    clock = StepClock()
    assert _plain_step(clock).step == 0
    clock.forward(training=True)
    clock.param_grad()
    assert clock.awaits_optimizer  # backward done, no optimizer step: the gradients may be discarded
    end = clock.gradients_discarded(scaler_skipped=True)
    assert (end.step, end.skipped, end.recorded) == (1, True, True)
    assert not end.forward_unseen  # a skipped step is never evidence of an unseen forward
    assert _plain_step(clock).step == 2


def test_gradients_discarded_without_a_scaler_skip_are_no_step():
    # A GAN's discriminator: the generator's loss flows through it, then netD.zero_grad().
    clock = StepClock()
    assert _plain_step(clock).step == 0
    clock.forward(training=True)  # D(G(z)) for the generator's loss
    clock.param_grad()
    end = clock.gradients_discarded(scaler_skipped=False)
    assert end.void and end.step == 1 and not end.skipped
    assert clock.step == 1  # the number is not used
    assert not clock.awaits_optimizer
    assert _plain_step(clock).step == 1


def test_activation_checkpoint_recomputes_are_not_counted_twice():
    clock = StepClock()
    clock.forward(training=True)
    assert clock.module_forward("inner.0", training=True, during_backward=False)
    assert not clock.module_forward("inner.0", training=True, during_backward=True)  # the recompute
    assert clock.module_forward("head", training=True, during_backward=True)  # first seen in a backward
    _plain_step(clock)
    # a new step: the module counts again
    assert clock.module_forward("inner.0", training=True, during_backward=False)


def test_eval_forwards_under_no_grad_between_steps_change_nothing():
    clock = StepClock()
    _plain_step(clock)
    clock.forward(training=False)  # model.eval(); with torch.no_grad(): model(x)
    assert clock.module_forward("0", training=False, during_backward=False)
    assert clock.log_step == 0  # a value logged now belongs to the step just taken
    assert clock.step == 1 and not clock.awaits_optimizer
    clock.forward(training=True)
    assert clock.log_step == 1  # after the next training forward: to the step in progress
    assert _plain_step(clock).step == 1


def test_every_n_records_every_nth_step_decided_when_it_begins():
    clock = StepClock(every=3)
    recorded = []
    for _ in range(7):
        assert clock.recording == (clock.step % 3 == 0)
        recorded.append(_plain_step(clock).recorded)
    assert recorded == [True, False, False, True, False, False, True]


def test_a_void_step_keeps_its_recording_decision():
    clock = StepClock(every=2)
    _plain_step(clock)  # step 0, recorded
    assert not clock.recording  # step 1
    clock.param_grad()
    clock.gradients_discarded(scaler_skipped=False)
    assert clock.step == 1 and not clock.recording
    assert not _plain_step(clock).recorded
    assert _plain_step(clock).recorded  # step 2


def test_a_backward_without_any_forward_is_an_unseen_forward_except_first_after_attach():
    clock = StepClock()
    clock.attach()
    clock.param_grad()  # the forward ran before attach(), or in compiled code without hooks
    first = clock.optimizer_post_step()
    assert first.forward_unseen and first.first_since_attach
    clock.param_grad()
    second = clock.optimizer_post_step()
    assert second.forward_unseen and not second.first_since_attach
    clock.forward(training=False)  # an eval forward is still a forward the hooks saw
    clock.param_grad()
    assert not clock.optimizer_post_step().forward_unseen


def test_a_watched_module_forward_counts_when_the_root_is_never_called():
    """Lightning's training_step calls `self.net(x)`: the LightningModule's own forward never runs."""
    clock = StepClock()
    clock.attach()
    for _ in range(2):
        assert clock.module_forward("net.0", training=True, during_backward=False)
        clock.param_grad()
        assert clock.log_step == clock.step  # a value logged now belongs to the step in progress
        assert not clock.optimizer_post_step().forward_unseen


def test_detach_forgets_the_step_in_progress():
    clock = StepClock()
    clock.forward(training=True)
    clock.param_grad()
    clock.detach()
    assert not clock.awaits_optimizer and clock.step == 0
    clock.attach()
    assert _plain_step(clock).first_since_attach


# ---- budget=: the interval chosen from fed-in timings ---------------------------------------------
def _budgeted_run(clock: StepClock, steps: int, plain: float, recorded_cost: float, between_cost: float = 0.0):
    """Run `steps` steps through the clock, feeding it what a step of these costs would measure;
    returns (the recorded steps, the interval in force at each, the slow-down the loop saw)."""
    recorded, intervals, own_total = [], [], 0.0
    for _ in range(steps):
        own = recorded_cost if clock.recording else between_cost
        timed = clock.timing
        end = _plain_step(clock)
        if end.recorded:
            recorded.append(end.step)
            intervals.append(clock.interval)
        own_total += own
        clock.step_timed(plain + own, own if timed else None)
    return recorded, intervals, own_total / (steps * plain)


def test_budget_records_every_step_when_recording_costs_less_than_the_budget():
    clock = StepClock(budget=0.02)
    recorded, intervals, slowdown = _budgeted_run(clock, 50, plain=0.1, recorded_cost=0.001)
    assert recorded == list(range(50)) and set(intervals) == {1}
    assert slowdown <= 0.02


def test_budget_records_rarely_when_recording_is_expensive_and_keeps_the_loop_within_it():
    clock = StepClock(budget=0.02)
    recorded, intervals, slowdown = _budgeted_run(clock, 2000, plain=0.1, recorded_cost=0.05)
    assert recorded[0] == 0  # the first step is always recorded
    assert clock.interval == 25  # 0.05 s every 25th step of 0.1 s: 2 %
    # It got there growing at most fourfold per decision (first steps are often slow for other reasons:
    # decisions at step 0 and at the step after each recorded one) ...
    assert recorded[:3] == [0, 16, 41] and intervals[:3] == [1, 16, 25]
    # ... and stayed: a steady cadence, whose cost over the whole run is within the budget
    assert set(intervals[2:]) == {25} and all(b - a == 25 for a, b in zip(recorded[1:], recorded[2:]))
    assert slowdown <= 0.021


def test_budget_counts_what_the_hooks_cost_between_recorded_steps():
    without = StepClock(budget=0.02)
    _budgeted_run(without, 400, plain=0.1, recorded_cost=0.05)
    with_between = StepClock(budget=0.02)
    _, _, slowdown = _budgeted_run(with_between, 2000, plain=0.1, recorded_cost=0.05, between_cost=0.001)
    # (C - B) / (budget T - B) = 0.049 / 0.001: records about twice as rarely, and still keeps the budget
    assert with_between.interval == 49 > without.interval
    assert slowdown <= 0.021


def test_budget_bounds_at_least_every_thousandth_step_and_every_as_the_shortest_interval():
    costly = StepClock(budget=0.01)
    recorded, _, _ = _budgeted_run(costly, 5000, plain=0.01, recorded_cost=10.0)  # 1000 steps' worth
    assert costly.interval == MAX_INTERVAL and recorded[-2:] == [recorded[-2], recorded[-2] + MAX_INTERVAL]
    # the hooks alone cost more than the budget between recorded steps: as rarely as allowed
    hopeless = StepClock(budget=0.01)
    _budgeted_run(hopeless, 3000, plain=0.1, recorded_cost=0.02, between_cost=0.002)
    assert hopeless.interval == MAX_INTERVAL
    cheap_but_every_5 = StepClock(every=5, budget=0.5)
    recorded, intervals, _ = _budgeted_run(cheap_but_every_5, 30, plain=0.1, recorded_cost=0.001)
    assert recorded == list(range(0, 30, 5)) and set(intervals) == {5}


def test_budget_interval_falls_back_when_recording_gets_cheaper_at_most_halving():
    clock = StepClock(budget=0.02)
    _budgeted_run(clock, 1000, plain=0.1, recorded_cost=0.08)
    assert clock.interval == 40
    recorded, intervals, _ = _budgeted_run(clock, 1000, plain=0.1, recorded_cost=0.01)
    assert clock.interval == 5
    falling = [i for i in intervals if i < 40]
    assert all(b >= a // 2 for a, b in zip(intervals, intervals[1:]))  # never more than halved at once
    assert falling[0] == 20 and falling[-1] == 5


def test_a_slow_step_does_not_move_the_interval():
    clock = StepClock(budget=0.02)
    _budgeted_run(clock, 1000, plain=0.1, recorded_cost=0.05)
    assert clock.interval == 25
    clock.forward(training=True)  # one recorded step far slower than the rest (a checkpoint save, a GC)
    _budgeted_run(clock, 1, plain=0.1, recorded_cost=5.0)
    _budgeted_run(clock, 200, plain=0.1, recorded_cost=0.05)
    assert clock.interval == 25


def test_bad_budgets_are_refused_naming_the_field():
    for bad in (0, -0.1, 1.5, float("nan"), float("inf"), "0.02", True):
        with pytest.raises(ConfigError, match=r"`budget` must be a number above 0 and at most 1"):
            check_budget(bad)
    check_budget(1)
    check_budget(None)


def test_without_a_budget_nothing_is_timed():
    clock = StepClock(every=3)
    assert not clock.timing
    clock.step_timed(1.0, 0.5)  # ignored: every=N decides
    assert [_plain_step(clock).recorded for _ in range(6)] == [True, False, False, True, False, False]


def test_a_slow_first_recorded_step_counts_only_until_another_is_measured():
    clock = StepClock(budget=0.02)
    _budgeted_run(clock, 1, plain=0.1, recorded_cost=5.0)  # step 0: a first call, 100 times dearer
    recorded, intervals, _ = _budgeted_run(clock, 200, plain=0.1, recorded_cost=0.05)
    assert recorded[:2] == [16, 41] and set(intervals) == {16, 25}
