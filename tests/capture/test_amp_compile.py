"""Mixed precision (autocast, GradScaler) and torch.compile: training never breaks, statistics are
those of eager fp32 arithmetic or are clearly marked unavailable.

Compiling is slow on a 2-core CI machine, so most compile tests use backend="aot_eager": it runs
Dynamo (which traces the hooks, the behaviour under test) and AOTAutograd (a compiled backward,
so the tensor hooks on outputs see compiled gradients) without generating kernels. One test uses
the default inductor backend. The CUDA tests skip, saying why, on machines without a GPU.
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradscope
from gradscope.statdefs import ACTIVATION_STAT_NAMES, GRADIENT_STAT_NAMES

from ..models import classification_batches

NO_GPU = "no CUDA GPU on this machine: fp16 autocast and CUDA compile run only where one exists"


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Dynamo reuses code compiled for an earlier model of the same class when its guards pass
    (they ignore hooks), which would let one test run another test's compiled graph."""
    yield
    if "torch._dynamo" in __import__("sys").modules:
        torch._dynamo.reset()


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))


def _train(model, forward, opt, batches, autocast_dtype=None, device="cpu", scaler=None, overflow_at=None):
    losses = []
    for i, (x, y) in enumerate(batches):
        x, y = x.to(device), y.to(device)
        with torch.autocast(device, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = F.cross_entropy(forward(x), y)
        if i == overflow_at:
            loss = loss * float("inf")  # forced overflow: GradScaler must skip this step
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def _watched_run(compile_kwargs=None, attach="before", steps=3, autocast_dtype=None, every=1):
    """Train `steps` steps under gradscope; compiled with `compile_kwargs` unless None."""
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    batches = classification_batches(steps, batch=16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if compile_kwargs is None:
            forward = model
            run = gradscope.watch(model, optimizer=opt, every=every).attach()
        elif attach == "before":  # watch the plain model, then compile it
            run = gradscope.watch(model, optimizer=opt, every=every).attach()
            forward = torch.compile(model, **compile_kwargs)
        elif attach == "after":  # watch the compiled module
            forward = torch.compile(model, **compile_kwargs)
            run = gradscope.watch(forward, optimizer=opt).attach()
        else:  # "after-first-call": compiled code that was traced before gradscope attached
            forward = torch.compile(model, **compile_kwargs)
            _train(model, forward, opt, batches[:1])
            run = gradscope.watch(forward, optimizer=opt).attach()
            batches = batches[1:]
        try:
            losses = _train(model, forward, opt, batches, autocast_dtype)
        finally:
            record = run.detach()
    ours = [w for w in caught if "gradscope" in str(w.message)]
    return record, losses, ours


def _assert_close(got, want, stats, rel, abs_tol=1e-7):
    for name in want.layers + list(want.param_stats):
        for stat in stats:
            for step, (a, b) in enumerate(zip(got.series(stat, name), want.series(stat, name))):
                assert (a is None) == (b is None), (name, stat, step, a, b)
                if a is not None:
                    assert a == pytest.approx(b, rel=rel, abs=abs_tol), (name, stat, step)


# ---- autocast and GradScaler --------------------------------------------------------------------
def test_bf16_autocast_statistics_are_fp32_reductions_of_the_bf16_tensors():
    model = _model()
    x, y = classification_batches(1, batch=32)[0]
    outputs, output_grads = {}, {}

    def keep(name):
        def hook(module, args, out):
            outputs[name] = out
            out.register_hook(lambda g: output_grads.__setitem__(name, g))

        return hook

    handles = [model[i].register_forward_hook(keep(str(i))) for i in (0, 1, 3)]
    with gradscope.watch(model) as run:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            F.cross_entropy(model(x), y).backward()
    for handle in handles:
        handle.remove()
    record = run.record
    for name, out in outputs.items():
        assert out.dtype == torch.bfloat16
        exact = out.detach().double()
        assert record.series("act_mean", name)[0] == pytest.approx(exact.mean().item(), rel=1e-5)
        assert record.series("act_std", name)[0] == pytest.approx(exact.std(unbiased=False).item(), rel=1e-5)
        assert record.series("act_sparsity", name)[0] == pytest.approx((exact == 0).double().mean().item())
        grad = output_grads[name].double()
        assert record.series("backprop_norm", name)[0] == pytest.approx(grad.norm().item(), rel=1e-5)
    weight_grad = model[2].weight.grad
    assert weight_grad.dtype == torch.float32  # autocast keeps parameters and their gradients in fp32
    assert record.series("grad_norm", "2.weight")[0] == pytest.approx(weight_grad.double().norm().item(), rel=1e-6)


def test_bf16_autocast_run_matches_the_fp32_run_within_bf16_precision():
    fp32, fp32_losses, _ = _watched_run()
    bf16, bf16_losses, _ = _watched_run(autocast_dtype=torch.bfloat16)
    assert bf16_losses == pytest.approx(fp32_losses, rel=2e-2)
    checked = 0
    for name in fp32.layers:
        for stat in ("act_mean", "act_std", "backprop_norm", "grad_norm", "grad_rms", "weight_norm", "update_ratio"):
            for a, b in zip(bf16.series(stat, name), fp32.series(stat, name)):
                if b is None:
                    assert a is None
                    continue
                assert math.isfinite(a), (name, stat)
                assert a == pytest.approx(b, rel=5e-2, abs=2e-3), (name, stat)
                checked += 1
        sparsity = bf16.series("act_sparsity", name)
        assert sparsity == pytest.approx(fp32.series("act_sparsity", name), abs=0.02)
    assert checked > 40


def test_grad_scaler_with_bf16_autocast_skips_are_amp_overflow_not_exploding_gradients():
    model = _model()
    reference = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    batches = classification_batches(4, batch=16)
    with gradscope.watch(model, optimizer=opt, scaler=scaler) as run:
        _train(model, model, opt, batches, torch.bfloat16, scaler=scaler, overflow_at=1)
    record = run.record
    assert record.skipped_steps == [1]
    assert record.series("grad_norm", "0")[1] is None
    # step 0: the unscaled gradient (the scaler multiplied the loss by 65536 before backward)
    x, y = batches[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        F.cross_entropy(reference(x), y).backward()
    expected = reference[0].weight.grad.double().norm().item()
    assert record.series("grad_norm", "0.weight")[0] == pytest.approx(expected, rel=1e-3)
    codes = gradscope.diagnose(record).codes()
    assert "amp-overflow" in codes and "exploding-gradients" not in codes


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)
def test_fp16_autocast_with_grad_scaler_on_cuda():
    model = _model().cuda()
    reference = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**16)
    batches = classification_batches(4, batch=16)
    with gradscope.watch(model, optimizer=opt, scaler=scaler) as run:
        _train(model, model, opt, batches, torch.float16, device="cuda", scaler=scaler, overflow_at=1)
    record = run.record
    assert record.skipped_steps == [1]
    x, y = (t.cuda() for t in batches[0])
    with torch.autocast("cuda", dtype=torch.float16):
        F.cross_entropy(reference(x), y).backward()
    expected = reference[0].weight.grad.double().norm().item()
    assert record.series("grad_norm", "0.weight")[0] == pytest.approx(expected, rel=1e-3)
    assert all(math.isfinite(v) for v in record.series("act_std", "1") if v is not None)


# ---- torch.compile --------------------------------------------------------------------------------
@pytest.mark.parametrize("attach", ["before", "after"])
def test_compiled_model_with_graph_breaks_records_eager_statistics(attach):
    eager, eager_losses, _ = _watched_run()
    compiled, losses, warned = _watched_run({"backend": "aot_eager"}, attach=attach)
    assert warned == []
    assert losses == pytest.approx(eager_losses, rel=1e-6)
    assert compiled.layers == eager.layers  # no "_orig_mod." prefix
    _assert_close(compiled, eager, list(ACTIVATION_STAT_NAMES) + ["backprop_norm"] + list(GRADIENT_STAT_NAMES), 1e-5)
    assert any("graph breaks" in note for note in compiled.meta.notes)


def test_compiled_model_with_every_n_keeps_one_hook_set_and_records_as_eager():
    # Between recorded steps an eager model runs without most hooks; a compiled one keeps them
    # all (changing hooks would make Dynamo recompile), with the same records.
    eager, eager_losses, _ = _watched_run(steps=5, every=2)
    compiled, losses, warned = _watched_run({"backend": "aot_eager"}, steps=5, every=2)
    assert warned == [] and compiled.steps == eager.steps == [0, 2, 4]
    assert losses == pytest.approx(eager_losses, rel=1e-6)
    _assert_close(compiled, eager, list(ACTIVATION_STAT_NAMES) + ["backprop_norm"] + list(GRADIENT_STAT_NAMES), 1e-5)

    def forward_hooks(model: nn.Module) -> int:
        return sum(len(m._forward_hooks) for m in model.modules())

    # the hook sets: swapped between recorded steps for the eager model, kept for the compiled one
    for compile_model in (False, True):
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        forward = torch.compile(model, backend="aot_eager") if compile_model else model
        counts = []
        with gradscope.watch(model, optimizer=opt, every=2):
            for x, y in classification_batches(4, batch=16):
                F.cross_entropy(forward(x), y).backward()
                opt.step()
                opt.zero_grad()
                counts.append(forward_hooks(model))  # the step in progress: 1 and 3 unrecorded
        if compile_model:
            assert counts[0] == counts[1] == counts[2], counts
        else:
            assert counts[0] < counts[1] and counts[1] == counts[3], counts


@pytest.mark.parametrize("attach", ["before", "after"])
def test_fullgraph_compile_keeps_training_and_marks_activation_statistics_unavailable(attach):
    eager, _, _ = _watched_run()
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    unwatched_losses = _train(model, torch.compile(model, backend="aot_eager", fullgraph=True), opt,
                              classification_batches(3, batch=16))
    torch._dynamo.reset()  # or the watched model would run the graph compiled (without hooks) just now
    compiled, losses, warned = _watched_run({"backend": "aot_eager", "fullgraph": True}, attach=attach)
    assert losses == unwatched_losses  # the compiled graph stayed whole and computes the same
    assert len(warned) == 1 and "fullgraph=True" in str(warned[0].message)
    _assert_close(compiled, eager, GRADIENT_STAT_NAMES, 1e-5)
    for name in compiled.layers:
        for stat in ("act_mean", "act_sparsity", "backprop_norm"):
            assert compiled.series(stat, name) == [None, None, None]
    assert all(m.executed for m in compiled.modules)
    assert any("fullgraph=True" in note and "backprop_norm" in note for note in compiled.meta.notes)
    assert compiled.steps == [0, 1, 2] and not compiled.hook_errors


def test_watching_after_the_first_compiled_call_says_activations_are_unavailable():
    record, _, warned = _watched_run({"backend": "aot_eager"}, attach="after-first-call", steps=3)
    assert len(warned) == 1 and "before the first call" in str(warned[0].message)
    assert record.steps == [0, 1]
    assert all(v > 0 for v in record.series("grad_norm", "0"))
    assert record.series("act_mean", "0") == [None, None]
    assert any("compiled before gradscope attached" in note for note in record.meta.notes)


def test_inductor_compiled_model_records_statistics_close_to_eager():
    eager, eager_losses, _ = _watched_run()
    compiled, losses, warned = _watched_run({}, attach="after")  # the default backend: inductor
    assert warned == []
    assert losses == pytest.approx(eager_losses, rel=1e-5)
    _assert_close(compiled, eager, list(ACTIVATION_STAT_NAMES) + ["backprop_norm"] + list(GRADIENT_STAT_NAMES),
                  1e-4, abs_tol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)
def test_compiled_model_on_cuda_records_statistics_close_to_eager():
    def run(compiled: bool):
        model = _model().cuda()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        forward = torch.compile(model) if compiled else model
        with gradscope.watch(forward, optimizer=opt) as watcher:
            _train(model, forward, opt, classification_batches(3, batch=16), device="cuda")
        return watcher.record

    _assert_close(run(True), run(False), list(ACTIVATION_STAT_NAMES) + ["backprop_norm"] + list(GRADIENT_STAT_NAMES),
                  1e-3, abs_tol=1e-5)
