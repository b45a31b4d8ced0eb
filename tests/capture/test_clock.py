"""The step clock on event sequences alone: no model, no torch.

Each sequence is what the hooks report for one kind of training loop; the clock must say which
steps ended, which GradScaler skipped, which were never steps, and which are recorded.
"""

from __future__ import annotations

from gradscope.capture.clock import Outcome, StepClock


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
