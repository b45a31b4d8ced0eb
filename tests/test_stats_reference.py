"""Every statistic against a slow, obvious reference: plain autograd with retain_grad, numpy."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradscope

from .models import classification_batches


def _model() -> nn.Sequential:
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.Sigmoid(), nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 3)
    )
    with torch.no_grad():  # some dead ReLU units and some saturation, so those counts are not trivially 0
        model[0].bias[:5] = -50.0
        model[2].weight.mul_(6.0)
        model[4].weight.mul_(4.0)
    return model


def _reference_step(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, lr: float) -> dict:
    """One SGD step by hand, keeping every layer's output and dL/d(output)."""
    outputs = []
    h = x
    for module in model:
        h = module(h)
        h.retain_grad()
        outputs.append(h)
    loss = F.cross_entropy(h, y)
    loss.backward()
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p -= lr * p.grad
    model.zero_grad()
    return {
        "outputs": [o.detach().numpy().astype(np.float64) for o in outputs],
        "out_grads": [o.grad.numpy().astype(np.float64) for o in outputs],
        "params": {k: v.numpy().astype(np.float64) for k, v in params.items()},
        "grads": {k: v.numpy().astype(np.float64) for k, v in grads.items()},
        "updated": {k: p.detach().numpy().astype(np.float64) for k, p in model.named_parameters()},
    }


@pytest.fixture(scope="module")
def watched_and_reference():
    model = _model()
    reference_model = copy.deepcopy(model)
    lr = 0.5
    (x, y), = classification_batches(1, batch=64)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    with gradscope.watch(model, optimizer=opt) as run:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
    return run.record, _reference_step(reference_model, x, y, lr)


def _close(actual, expected, rel=1e-5, abs_=1e-7):
    assert actual == pytest.approx(expected, rel=rel, abs=abs_)


def test_gradient_statistics_per_parameter_and_per_module(watched_and_reference):
    record, ref = watched_and_reference
    for index in ("0", "2", "4", "6"):
        w, b = ref["grads"][f"{index}.weight"], ref["grads"][f"{index}.bias"]
        for pname, g in ((f"{index}.weight", w), (f"{index}.bias", b)):
            _close(record.series("grad_norm", pname)[0], np.linalg.norm(g))
            _close(record.series("grad_rms", pname)[0], np.sqrt(np.mean(g**2)))
            _close(record.series("grad_mean_abs", pname)[0], np.mean(np.abs(g)))
            _close(record.series("grad_max", pname)[0], np.max(np.abs(g)))
            _close(record.series("grad_zero_frac", pname)[0], np.mean(g == 0))
            assert record.series("grad_nonfinite", pname) == [0.0]
        both = np.concatenate([w.ravel(), b.ravel()])
        _close(record.series("grad_norm", index)[0], np.linalg.norm(both))
        _close(record.series("grad_rms", index)[0], np.sqrt(np.mean(both**2)))
        _close(record.series("grad_mean_abs", index)[0], np.mean(np.abs(both)))
        _close(record.series("grad_max", index)[0], np.max(np.abs(both)))
        _close(record.series("grad_zero_frac", index)[0], np.mean(both == 0))
    # The dead ReLU units of layer 0 get exactly zero gradient rows.
    assert record.series("grad_zero_frac", "0.bias")[0] >= 5 / 32


def test_weight_norm_and_update_ratio(watched_and_reference):
    record, ref = watched_and_reference
    for index in ("0", "2", "4", "6"):
        before = np.concatenate([ref["params"][f"{index}.{k}"].ravel() for k in ("weight", "bias")])
        after = np.concatenate([ref["updated"][f"{index}.{k}"].ravel() for k in ("weight", "bias")])
        _close(record.series("weight_norm", index)[0], np.linalg.norm(before))
        _close(record.series("update_ratio", index)[0], np.linalg.norm(after - before) / np.linalg.norm(before), rel=1e-4)
        w0, w1 = ref["params"][f"{index}.weight"], ref["updated"][f"{index}.weight"]
        _close(record.series("update_ratio", f"{index}.weight")[0], np.linalg.norm(w1 - w0) / np.linalg.norm(w0), rel=1e-4)


def test_activation_statistics(watched_and_reference):
    record, ref = watched_and_reference
    for i, name in enumerate(record.layers):
        out = ref["outputs"][i]
        _close(record.series("act_sparsity", name)[0], np.mean(out == 0))
        _close(record.series("act_mean", name)[0], out.mean(), rel=1e-4, abs_=1e-6)
        _close(record.series("act_std", name)[0], out.std(), rel=1e-4, abs_=1e-6)
        if record.module(name).activation in ("relu", "sigmoid"):
            dead_units = np.all(out == 0, axis=0)
            _close(record.series("act_dead_frac", name)[0], dead_units.mean())
        else:  # a Linear/Tanh output is 0 for every sample only when its weights are: not measured
            assert record.series("act_dead_frac", name) == [None]
        assert record.series("act_calls", name) == [1.0]
        assert record.series("act_batch", name) == [64.0]
    sigmoid, tanh = ref["outputs"][3], ref["outputs"][5]
    assert record.series("act_dead_frac", "1")[0] == pytest.approx(5 / 32)
    _close(record.series("act_saturation", "3")[0], np.mean((sigmoid < 0.01) | (sigmoid > 0.99)))
    _close(record.series("act_saturation", "5")[0], np.mean(np.abs(tanh) > 0.99))
    assert record.series("act_saturation", "5")[0] > 0.05  # the x4 weights do saturate
    assert record.series("act_saturation", "1") == [None]  # ReLU has no flat region to report


def test_backprop_signal_is_the_norm_of_dloss_doutput(watched_and_reference):
    record, ref = watched_and_reference
    for i, name in enumerate(record.layers):
        _close(record.series("backprop_norm", name)[0], np.linalg.norm(ref["out_grads"][i]), rel=1e-5, abs_=1e-9)


def test_layers_in_forward_order_and_module_tree(watched_and_reference):
    record, _ = watched_and_reference
    assert record.layers == [str(i) for i in range(7)]
    kinds = {m.name: m.activation for m in record.modules}
    assert kinds == {"0": None, "1": "relu", "2": None, "3": "sigmoid", "4": None, "5": "tanh", "6": None}
    assert record.module("0").params == ["0.weight", "0.bias"]
    assert record.module("0").num_params == 8 * 32 + 32
    assert record.meta.grad_source == "optimizer" and record.meta.optimizer == "SGD"


def test_conv_units_are_channels():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 6, 3, padding=1)
    with torch.no_grad():
        conv.bias[:2] = -100.0  # channels 0 and 1 never fire after the ReLU
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(6 * 5 * 5, 2))
    x = torch.randn(4, 3, 5, 5)
    with gradscope.watch(model) as run:
        model(x).sum().backward()
    relu_out = torch.relu(conv(x)).detach().numpy()
    expected = np.all(relu_out == 0, axis=(0, 2, 3)).mean()
    assert run.record.series("act_dead_frac", "1") == [pytest.approx(expected)]
    assert expected == pytest.approx(2 / 6)


def test_dead_units_need_silence_over_every_batch_of_the_window():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 0]]))
        model[0].bias.copy_(torch.tensor([0.0, 0.0, -1.0]))
    positive = torch.ones(2, 4)  # unit 0 and 1 fire
    negative = -torch.ones(2, 4)  # nothing fires
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with gradscope.watch(model, optimizer=opt, every=2) as run:
        for x in (negative, positive, negative, negative):  # window 1: steps 0; window 2: steps 1-2 ...
            model(x).sum().backward()
            opt.step()
            opt.zero_grad()
    # step 0: only negatives -> all 3 dead; window of steps 1-2 saw a positive batch -> only unit 2 dead
    assert run.record.steps == [0, 2]
    assert run.record.series("act_dead_frac", "1") == [pytest.approx(1.0), pytest.approx(1 / 3)]
    # the other activation statistics describe the recorded step's batches only
    assert run.record.series("act_calls", "1") == [1.0, 1.0]
    assert run.record.series("act_sparsity", "1") == [1.0, 1.0]


def test_sampled_statistics_of_large_tensors_are_close_to_exact():
    """Large tensors' counts, |g| sums and spread use every k-th slice: check the estimate."""
    from gradscope.measure import ACTIVATION_SAMPLE, PARAMETER_SAMPLE

    torch.manual_seed(0)
    width = 512
    model = nn.Sequential(nn.Linear(256, width), nn.ReLU(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 4))
    with torch.no_grad():
        model[2].weight.mul_(5.0)  # a good share of saturated tanh outputs
    x = torch.randn(512, 256)
    y = torch.randint(0, 4, (512,))
    assert x.shape[0] * width > 2 * ACTIVATION_SAMPLE and 256 * width > 2 * PARAMETER_SAMPLE
    reference = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradscope.watch(model, optimizer=opt) as run:
        F.cross_entropy(model(x), y).backward()
        opt.step()
    record = run.record
    h = reference[1](reference[0](x))
    t = reference[3](reference[2](h))
    F.cross_entropy(reference[4](t), y).backward()
    g = reference[2].weight.grad
    assert record.series("act_sparsity", "1")[0] == pytest.approx((h == 0).float().mean().item(), abs=0.02)
    assert record.series("act_saturation", "3")[0] == pytest.approx((t.abs() > 0.99).float().mean().item(), abs=0.03)
    # weight rows (output units) differ in gradient scale, so these estimates are looser
    assert record.series("grad_mean_abs", "2.weight")[0] == pytest.approx(g.abs().mean().item(), rel=0.1)
    assert record.series("grad_zero_frac", "0.weight")[0] == pytest.approx(
        (reference[0].weight.grad == 0).float().mean().item(), abs=0.02
    )
    before = reference[2].weight.detach()
    exact = (0.1 * g).norm().item() / before.norm().item()
    assert record.series("update_ratio", "2.weight")[0] == pytest.approx(exact, rel=0.1)
    # exact statistics stay exact on large tensors
    assert record.series("grad_norm", "2.weight")[0] == pytest.approx(g.norm().item(), rel=1e-5)
    assert record.series("grad_max", "2.weight")[0] == pytest.approx(g.abs().max().item(), rel=1e-6)
    assert record.series("act_mean", "1")[0] == pytest.approx(h.mean().item(), rel=1e-4)
    assert record.series("act_std", "3")[0] == pytest.approx(t.std(unbiased=False).item(), rel=0.05)
    assert any("estimated" in note for note in record.meta.notes)


@pytest.mark.parametrize(
    "shape",
    [(4, 64, 256), (8, 16, 16, 16)],  # a few sequences of tokens (rows: tokens); feature maps (rows: lines)
    ids=["tokens", "feature-maps"],
)
def test_sampled_activation_statistics_of_batches_of_long_samples_are_close_to_exact(shape) -> None:
    """Outputs with few, long samples: the sample is every k-th row across all of them."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Identity(), nn.ReLU(), nn.Tanh())
    x = 3 * torch.randn(*shape, requires_grad=True)
    with gradscope.watch(model) as run:
        model(x).sum().backward()
    relu = x.detach().relu()
    tanh = relu.tanh()
    record = run.record
    assert record.series("act_sparsity", "1")[0] == pytest.approx((relu == 0).float().mean().item(), abs=0.02)
    assert record.series("act_saturation", "2")[0] == pytest.approx((tanh.abs() > 0.99).float().mean().item(), abs=0.03)
    assert record.series("act_std", "1")[0] == pytest.approx(relu.std().item(), rel=0.05)
    assert record.series("act_mean", "2")[0] == pytest.approx(tanh.mean().item(), rel=1e-5)  # exact
