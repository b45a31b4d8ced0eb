"""Gradients before clipping: read where the last backward left them, against plain autograd."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import gradscope

from ..models import classification_batches, mlp


def _exploding_mlp() -> nn.Sequential:
    """Weights ten times too large for the depth: the gradient grows ~x6 per layer towards the input."""
    torch.manual_seed(0)
    model = mlp((8, 32, 32, 32, 32, 3), activation=nn.Identity)
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(10.0)
    return model


def _train(model, batches, clip=None, accumulate=1, watch=True):
    """Returns the record and, per step, every parameter's gradient norm right after the last backward."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    expected: list[dict[str, float]] = []
    run = gradscope.watch(model, optimizer=opt).attach() if watch else None
    try:
        for i, (x, y) in enumerate(batches):
            (nn.functional.cross_entropy(model(x), y) / accumulate).backward()
            if (i + 1) % accumulate:
                continue
            expected.append({n: p.grad.double().norm().item() for n, p in model.named_parameters()})
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            opt.zero_grad()
    finally:
        record = run.detach() if run else None
    return record, expected


@pytest.mark.parametrize("accumulate", [1, 2])
def test_preclip_norm_is_the_gradient_before_clip_grad_norm(accumulate):
    record, expected = _train(_exploding_mlp(), classification_batches(4 * accumulate), clip=1.0, accumulate=accumulate)
    assert record.steps == [0, 1, 2, 3]
    for step, norms in enumerate(expected):
        for name, norm in norms.items():
            assert record.series("grad_norm_preclip", name)[step] == pytest.approx(norm, rel=1e-5)
        total_before = math.sqrt(sum(v * v for v in norms.values()))
        assert total_before > 1.0  # clipping had work to do
        total_used = math.sqrt(sum(record.series("grad_norm", n)[step] ** 2 for n in norms))
        assert total_used == pytest.approx(1.0, rel=1e-4)  # clip_grad_norm_(..., 1.0) did it
        for name in norms:
            assert record.series("clip_factor", name)[step] == pytest.approx(total_used / total_before, rel=1e-4)


def test_without_clipping_the_factor_is_exactly_one():
    record, _ = _train(mlp(), classification_batches(3))
    factors = [v for n in record.param_stats for v in record.series("clip_factor", n)]
    assert factors and all(v == 1.0 for v in factors)


def test_without_an_optimizer_there_is_no_preclip_statistic():
    model = mlp()
    with gradscope.watch(model) as run:
        for x, y in classification_batches(2):
            nn.functional.cross_entropy(model(x), y).backward()
    assert all(v is None for v in run.record.series("grad_norm_preclip", "0"))


def test_clipping_does_not_hide_exploding_gradients():
    record, _ = _train(_exploding_mlp(), classification_batches(6), clip=1.0)
    finding = next(f for f in gradscope.diagnose(record) if f.code == "exploding-gradients")
    assert "before clipping" in finding.message and "clipping active on 100% of steps" in finding.message
    assert finding.evidence["clipping_active_frac"] == 1.0
    assert finding.evidence["max_grad_norm"] > 1000  # the pre-clip norm, far above what the optimizer used


def test_recording_preclip_changes_no_number_of_training():
    plain_model, watched_model = _exploding_mlp(), _exploding_mlp()
    batches = classification_batches(4)
    _train(plain_model, batches, clip=1.0, watch=False)
    _train(watched_model, batches, clip=1.0)
    for a, b in zip(plain_model.parameters(), watched_model.parameters()):
        assert torch.equal(a, b)


def test_a_step_given_a_closure_reads_the_gradients_after_it_as_lightning_needs():
    """optimizer.step(closure) runs forward, backward and clipping inside the closure, after the
    step's pre-hook fired: the gradients must be read when the closure has returned."""
    batches = classification_batches(4)
    plain, _ = _train(_exploding_mlp(), batches, clip=1.0)
    model = _exploding_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    with gradscope.watch(model, optimizer=opt) as run:
        for x, y in batches:

            def closure(x=x, y=y):
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                return loss

            opt.step(closure)
            opt.zero_grad()
    assert run.record.steps == plain.steps
    for name in plain.param_stats:
        for stat in ("grad_norm", "grad_norm_preclip", "update_ratio"):
            assert run.record.series(stat, name) == pytest.approx(plain.series(stat, name), rel=1e-6), (stat, name)
    assert not run.record.hook_errors


def test_a_grad_scaler_watch_was_not_told_about_is_not_taken_for_clipping():
    from gradscope.diagnose.clipping import clipping, gradient_norm_stat

    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    with gradscope.watch(model, optimizer=opt) as run:  # no scaler=: the norms at the backward are scaled
        for x, y in classification_batches(4):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = nn.functional.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
    record = run.record
    assert record.series("clip_factor", "0.weight")[0] == pytest.approx(2.0**-16)  # unscale_, not clipping
    assert clipping(record) is None and gradient_norm_stat(record) == "grad_norm"
    assert "exploding-gradients" not in gradscope.diagnose(record).codes()
