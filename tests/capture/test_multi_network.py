"""Several networks in one loop, one watcher each: a step is what each network's optimizer did.

A GAN's generator loss flows through the discriminator, whose optimizer does not step, and
`netD.zero_grad()` then throws those gradients away: not a step of D, and never an AMP skip.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradscope

from ..models import all_hooks, classification_batches, mlp

ITERATIONS = 10


def _gan():
    torch.manual_seed(0)
    netG = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 8), nn.Tanh())
    netD = nn.Sequential(nn.Linear(8, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    optG = torch.optim.Adam(netG.parameters(), lr=2e-3, betas=(0.5, 0.999))
    optD = torch.optim.Adam(netD.parameters(), lr=2e-3, betas=(0.5, 0.999))
    return netG, netD, optG, optD


def _train_gan(netG, netD, optG, optD, scaler=None, overflow_d_at=None, autocast_dtype=None):
    """The DCGAN example's loop (D on real and detached fake, then G through D). Returns the
    gradient norm of each network's first weight as its optimizer used it, and the losses."""
    g = torch.Generator().manual_seed(1)
    used = {"D": [], "G": []}
    losses = []

    def backward_and_step(loss, opt, key, net):
        if scaler is None:
            loss.backward()
            used[key].append(net[0].weight.grad.norm().item())
            opt.step()
            return
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        norm = net[0].weight.grad.norm().item()
        used[key].append(norm if norm == norm and norm != float("inf") else None)
        scaler.step(opt)

    for i in range(ITERATIONS):
        real = torch.randn(16, 8, generator=g) * 0.5 + 1.0
        noise = torch.randn(16, 4, generator=g)
        with torch.autocast("cpu", dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
            netD.zero_grad()
            err_real = F.binary_cross_entropy_with_logits(netD(real).float(), torch.ones(16, 1))
            fake = netG(noise)
            err_fake = F.binary_cross_entropy_with_logits(netD(fake.detach()).float(), torch.zeros(16, 1))
            errD = err_real + err_fake
            if i == overflow_d_at:
                errD = errD * float("inf")
        backward_and_step(errD, optD, "D", netD)
        with torch.autocast("cpu", dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
            netG.zero_grad()
            errG = F.binary_cross_entropy_with_logits(netD(fake).float(), torch.ones(16, 1))
        backward_and_step(errG, optG, "G", netG)
        if scaler is not None:
            scaler.update()
        losses.append((errD.item(), errG.item()))
    return used, losses


def test_gan_one_watcher_per_network_records_one_step_per_iteration_each():
    netG, netD, optG, optD = _gan()
    plain = copy.deepcopy((netG, netD, optG, optD))
    before = all_hooks(netG, optG) + all_hooks(netD, optD)
    with gradscope.watch(netG, optimizer=optG) as run_g, gradscope.watch(netD, optimizer=optD) as run_d:
        used, losses = _train_gan(netG, netD, optG, optD)
    assert all_hooks(netG, optG) + all_hooks(netD, optD) == before
    _, plain_losses = _train_gan(*plain)
    assert losses == plain_losses  # observation only

    record_g, record_d = run_g.record, run_d.record
    for record in (record_g, record_d):
        assert record.steps == list(range(ITERATIONS))
        assert record.skipped_steps == [] and not record.hook_errors
        assert "amp-overflow" not in gradscope.diagnose(record).codes()
    # each record holds its own network's gradients, as its optimizer used them
    assert record_d.series("grad_norm", "0.weight") == pytest.approx(used["D"], rel=1e-6)
    assert record_g.series("grad_norm", "0.weight") == pytest.approx(used["G"], rel=1e-6)
    # D's steps are its two own forwards (real, detached fake); the pass for G's loss is no part of them
    assert record_d.series("act_calls", "0") == [2.0] * ITERATIONS
    assert record_g.series("act_calls", "0") == [1.0] * ITERATIONS
    assert any("discarded" in note for note in record_d.meta.notes)
    assert not any("discarded" in note for note in record_g.meta.notes)


def test_gan_backprop_signal_of_the_discriminator_is_that_of_its_own_loss():
    netG, netD, optG, optD = _gan()
    reference = copy.deepcopy(netD)
    with gradscope.watch(netD, optimizer=optD) as run_d:
        _train_gan(netG, netD, optG, optD)
    # step 0 replayed on the copy: D's own loss only, dL/d(output of D's first layer)
    g = torch.Generator().manual_seed(1)
    real = torch.randn(16, 8, generator=g) * 0.5 + 1.0
    noise = torch.randn(16, 4, generator=g)
    torch.manual_seed(0)
    netG0 = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 8), nn.Tanh())
    fake = netG0(noise).detach()
    grads = []
    for inputs, target in ((real, 1.0), (fake, 0.0)):
        hidden = reference[0](inputs)
        hidden.retain_grad()
        F.binary_cross_entropy_with_logits(reference[1:](hidden), torch.full((16, 1), target)).backward()
        grads.append(hidden.grad.norm().item())
    expected = (grads[0] ** 2 + grads[1] ** 2) ** 0.5  # two calls in one step add in quadrature
    assert run_d.record.series("backprop_norm", "0")[0] == pytest.approx(expected, rel=1e-5)


def test_gan_with_a_shared_grad_scaler_records_the_skip_only_where_the_scaler_skipped():
    netG, netD, optG, optD = _gan()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    with gradscope.watch(netG, optimizer=optG, scaler=scaler) as run_g, \
            gradscope.watch(netD, optimizer=optD, scaler=scaler) as run_d:
        used, _ = _train_gan(netG, netD, optG, optD, scaler=scaler, overflow_d_at=3, autocast_dtype=torch.bfloat16)
    record_d, record_g = run_d.record, run_g.record
    assert record_d.steps == list(range(ITERATIONS)) and record_d.skipped_steps == [3]
    assert record_g.steps == list(range(ITERATIONS)) and record_g.skipped_steps == []  # G stepped
    assert record_d.series("grad_norm", "0.weight")[3] is None
    got = record_d.series("grad_norm", "0.weight")
    assert [v for i, v in enumerate(got) if i != 3] == pytest.approx([v for i, v in enumerate(used["D"]) if i != 3], rel=1e-6)
    assert record_g.series("grad_norm", "0.weight") == pytest.approx(used["G"], rel=1e-6)
    assert "amp-overflow" in gradscope.diagnose(record_d).codes()
    assert "amp-overflow" not in gradscope.diagnose(record_g).codes()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_forced_overflow_under_cpu_autocast_is_still_a_skipped_step(dtype):
    try:
        with torch.autocast("cpu", dtype=dtype):
            torch.ones(2, 2) @ torch.ones(2, 2)
    except RuntimeError as exc:  # older releases have no fp16 autocast on CPU
        pytest.skip(f"CPU autocast does not support {dtype} here: {exc}")
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    with gradscope.watch(model, optimizer=opt, scaler=scaler) as run:
        for i, (x, y) in enumerate(classification_batches(4)):
            with torch.autocast("cpu", dtype=dtype):
                loss = F.cross_entropy(model(x).float(), y)
            scaler.scale(loss * (float("inf") if i == 2 else 1.0)).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
    assert run.record.steps == [0, 1, 2, 3] and run.record.skipped_steps == [2]


def test_teacher_and_student_each_record_their_own_network():
    def distill(watch_teacher: bool):
        torch.manual_seed(0)
        teacher, student = mlp((8, 32, 3)), mlp((8, 16, 3))
        teacher.requires_grad_(False)  # frozen, but run in train mode with grad enabled
        opt = torch.optim.SGD(student.parameters(), lr=0.1)
        used = []
        watchers = [gradscope.watch(student, optimizer=opt)] + ([gradscope.watch(teacher)] if watch_teacher else [])
        for w in watchers:
            w.attach()
        try:
            for x, _ in classification_batches(5):
                soft = F.softmax(teacher(x) / 2.0, dim=-1)
                loss = F.kl_div(F.log_softmax(student(x) / 2.0, dim=-1), soft, reduction="batchmean")
                loss.backward()
                used.append(student[0].weight.grad.norm().item())
                opt.step()
                opt.zero_grad()
        finally:
            records = [w.detach() for w in watchers]
        return records, used

    (student_record, teacher_record), used = distill(watch_teacher=True)
    (alone,), _ = distill(watch_teacher=False)
    assert student_record.steps == list(range(5))
    assert student_record.series("grad_norm", "0.weight") == pytest.approx(used, rel=1e-6)
    assert student_record.layer_stats == alone.layer_stats  # the teacher's watcher changes nothing
    assert teacher_record.steps == [] and not teacher_record.hook_errors  # nothing trains the teacher


def test_an_ema_copy_watched_beside_its_model_records_no_steps_and_changes_nothing():
    def train(watch_ema: bool):
        torch.manual_seed(0)
        model = mlp()
        ema = copy.deepcopy(model).eval().requires_grad_(False)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        watchers = [gradscope.watch(model, optimizer=opt)] + ([gradscope.watch(ema)] if watch_ema else [])
        for w in watchers:
            w.attach()
        try:
            for x, y in classification_batches(4):
                F.cross_entropy(model(x), y).backward()
                opt.step()
                opt.zero_grad()
                with torch.no_grad():
                    for e, p in zip(ema.parameters(), model.parameters()):
                        e.mul_(0.9).add_(p, alpha=0.1)
                    ema(x)
        finally:
            records = [w.detach() for w in watchers]
        return records, model, ema

    (model_record, ema_record), model, ema = train(watch_ema=True)
    (alone,), _, _ = train(watch_ema=False)
    assert model_record.steps == list(range(4)) and model_record.layer_stats == alone.layer_stats
    assert ema_record.steps == [] and not ema_record.hook_errors
    assert all_hooks(model) == 0 and all_hooks(ema) == 0
