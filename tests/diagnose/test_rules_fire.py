"""Every rule fires on a real model built to show its problem, and names the right layers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import gradscope
from tests.diagnose.builders import batches, classification_data, stack, train


def findings(record, code):
    return [f for f in gradscope.diagnose(record) if f.code == code]


def only(record, code):
    found = findings(record, code)
    assert len(found) == 1, f"expected one {code!r} finding, got {gradscope.diagnose(record).codes()}"
    return found[0]


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(0)
    return classification_data(256)


# ---- vanishing ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sigmoid_record(data):
    torch.manual_seed(0)
    model = stack([16] + [32] * 9 + [4], nn.Sigmoid)  # 10 Linear layers, PyTorch's default init
    return train(model, batches(*data, 32, 6))


def test_deep_sigmoid_mlp_vanishes_towards_the_input(sigmoid_record):
    finding = only(sigmoid_record, "vanishing-gradients")
    assert finding.severity == "error"
    ev = finding.evidence
    assert ev["statistic"] == "backprop_norm" and ev["first_layer"] == "0" and ev["last_layer"] == "18"
    # sigmoid' <= 1/4 and default-init weights shrink the signal further: well under 0.25 per layer
    assert 0.05 < ev["decay_per_layer"] < 0.25
    assert ev["first_last_ratio"] < 1e-5
    assert list(ev["backprop_norm_per_layer"]) == [str(i) for i in range(0, 19, 2)]
    assert finding.layers[:3] == ["0", "2", "4"] and "18" not in finding.layers


def test_vanishing_decay_is_the_least_squares_fit_of_the_recorded_values(sigmoid_record):
    import numpy as np

    ev = only(sigmoid_record, "vanishing-gradients").evidence
    values = np.array(list(ev["backprop_norm_per_layer"].values()))
    distance_from_output = np.arange(len(values))[::-1]
    slope = np.polyfit(distance_from_output, np.log(values), 1)[0]
    assert ev["decay_per_layer"] == pytest.approx(math.exp(slope), rel=1e-9)
    assert ev["first_last_ratio"] == pytest.approx(values[0] / values[-1])


def test_vanishing_advice_names_the_sigmoids_and_where_batchnorm_goes(sigmoid_record):
    finding = only(sigmoid_record, "vanishing-gradients")
    text = finding.recommendation
    assert "nn.ReLU" in text and "Kaiming" in text and "residual" in text
    # BatchNorm between each hidden Linear and its sigmoid: exactly Linear 0..16, never the head 18
    assert "model[0] = nn.Sequential(model[0], nn.BatchNorm1d(model[0].out_features))" in finding.snippet
    assert "model[16] = nn.Sequential(model[16]" in finding.snippet and "model[18] = nn.Sequential" not in finding.snippet
    assert "model[17] = nn.ReLU()  # was Sigmoid" in finding.snippet
    compile(finding.snippet, "<snippet>", "exec")  # real Python


def test_vanishing_snippet_runs_and_the_fixed_model_no_longer_vanishes(data, sigmoid_record):
    torch.manual_seed(0)
    model = stack([16] + [32] * 9 + [4], nn.Sigmoid)
    snippet = only(sigmoid_record, "vanishing-gradients").snippet
    option1 = snippet.split("# Option 2")[0]
    exec(compile(option1, "<snippet>", "exec"), {"model": model})
    assert not any(isinstance(m, nn.Sigmoid) for m in model.modules())
    record = train(model, batches(*data, 32, 6))
    assert "vanishing-gradients" not in gradscope.diagnose(record).codes()


def test_deep_relu_mlp_at_pytorch_default_init_vanishes_by_sqrt_one_sixth(data):
    torch.manual_seed(0)
    model = stack([16] + [64] * 8 + [4], nn.ReLU)
    record = train(model, batches(*data, 32, 4))
    finding = only(record, "vanishing-gradients")
    # default init has weight variance 1/(3 fan_in); ReLU passes half: sqrt(64 / (3 * 64) / 2) = 0.408
    assert finding.evidence["decay_per_layer"] == pytest.approx(0.408, abs=0.05)
    assert finding.severity == "warning"
    assert "Kaiming" in finding.recommendation and "# Option 1: Kaiming init" in finding.snippet
    assert "nn.ReLU()  # was" not in finding.snippet  # already ReLU: no activation swap


# ---- exploding --------------------------------------------------------------------------------


def test_weights_scaled_up_explode_along_depth(data):
    torch.manual_seed(0)
    model = stack([16] + [64] * 8 + [4], nn.ReLU)
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(6.0)
    record = train(model, batches(*data, 32, 3), optimizer=torch.optim.SGD(model.parameters(), lr=1e-9))
    finding = only(record, "exploding-gradients")
    # x6 default-init weights, ReLU halving the variance: sqrt(64 * 6^2 / (3 * 64) / 2) = 2.45 per layer
    assert finding.evidence["depth_growth"] > 100 and 2.0 < finding.evidence["growth_per_layer"] < 3.0
    assert finding.evidence["max_grad_norm"] > finding.evidence["huge_grad_norm"] == 1000
    assert finding.layers[0] == "0"
    assert "clip_grad_norm_" in finding.snippet and "kaiming_normal_" in finding.snippet
    assert "vanishing-gradients" not in gradscope.diagnose(record).codes()


def test_learning_rate_too_high_grows_over_steps(data):
    torch.manual_seed(0)
    model = stack([16, 32, 1], nn.Tanh)
    x, _ = data
    target = x[:, :1] * 3
    pairs = [(x[:64], target[:64])] * 12
    record = train(model, pairs, optimizer=torch.optim.SGD(model.parameters(), lr=0.9), loss_fn=nn.functional.mse_loss)
    finding = only(record, "exploding-gradients")
    assert finding.evidence["step_growth"] > 100
    assert "amp-overflow" not in gradscope.diagnose(record).codes()


# ---- non-finite -----------------------------------------------------------------------------------


class Sqrt(nn.Module):
    def forward(self, x):
        return torch.sqrt(x)  # NaN for negative inputs


def test_nan_is_traced_to_the_first_module_forward_and_backward(data):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), Sqrt(), nn.Linear(32, 4))
    record = train(model, batches(*data, 32, 3))
    finding = only(record, "nonfinite")
    assert finding.severity == "error"
    assert finding.evidence["first_step"] == 0
    assert finding.evidence["first_forward_layer"] == "3"  # the Sqrt, not the Linear after it
    assert finding.evidence["first_backward_layer"] == "4"  # the head: the first the backward pass reaches
    assert finding.evidence["first_nonfinite_loss_step"] == 0
    assert "`3`" in finding.title


# ---- dead ReLU -----------------------------------------------------------------------------------------


def test_large_negative_bias_kills_the_relu_after_it(data):
    torch.manual_seed(0)
    model = stack([16, 64, 64, 64, 4], nn.ReLU)
    with torch.no_grad():
        model[2].bias.fill_(-10.0)
    record = train(model, batches(*data, 32, 5))
    finding = only(record, "dead-relu")
    assert finding.severity == "error"
    assert finding.layers[0] == "3" and "1" not in finding.layers
    assert finding.evidence["dead_fraction"]["3"] == 1.0
    assert "model[3] = nn.LeakyReLU(0.01)" in finding.snippet
    assert "'2'" in finding.snippet  # the Linear feeding it gets Kaiming init


# ---- saturation ----------------------------------------------------------------------------------------


def test_tanh_with_weights_times_six_saturates(data):
    torch.manual_seed(0)
    model = stack([16, 32, 32, 32, 4], nn.Tanh)
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(6.0)
    record = train(model, batches(*data, 32, 4))
    finding = only(record, "saturation")
    assert finding.layers == ["1", "3", "5"]
    assert all(v > 0.3 for v in finding.evidence["saturated_fraction"].values())
    assert "xavier_uniform_" in finding.snippet and "BatchNorm1d" in finding.snippet
    assert "standardised" in finding.recommendation and "x_train.mean(0)" in finding.snippet


# ---- update ratio ------------------------------------------------------------------------------------------


def test_tiny_learning_rate_gives_tiny_updates(data):
    torch.manual_seed(0)
    model = stack([16, 32, 4], nn.ReLU)
    record = train(model, batches(*data, 32, 3), optimizer=torch.optim.SGD(model.parameters(), lr=1e-8))
    finding = only(record, "update-ratio-low")
    assert finding.layers == ["0", "2"]
    assert all(v < 1e-5 for v in finding.evidence["median_update_ratio"].values())
    assert "update-ratio-high" not in gradscope.diagnose(record).codes()


def test_huge_learning_rate_gives_huge_updates(data):
    torch.manual_seed(0)
    model = stack([16, 32, 4], nn.ReLU)
    record = train(model, batches(*data, 32, 3), optimizer=torch.optim.Adam(model.parameters(), lr=0.5))
    finding = only(record, "update-ratio-high")
    assert set(finding.layers) == {"0", "2"}


def test_zero_initialised_layers_are_not_huge_updates(data):
    torch.manual_seed(0)
    model = stack([16, 32, 32, 4], nn.ReLU)
    with torch.no_grad():
        model[4].weight.zero_()  # a zero-initialised head: its relative change is undefined at first
        model[4].bias.zero_()
    record = train(model, batches(*data, 32, 4), optimizer=torch.optim.Adam(model.parameters(), lr=1e-3))
    assert record.series("weight_norm", "4")[0] == 0.0 and record.series("update_ratio", "4")[1] > 0.1
    assert "update-ratio-high" not in gradscope.diagnose(record).codes()


# ---- overfitting ----------------------------------------------------------------------------------------------


def test_wide_net_on_48_samples_overfits(data):
    torch.manual_seed(0)
    x, y = data
    noisy = torch.randint(0, 4, (48,), generator=torch.Generator().manual_seed(5))  # nothing to generalise
    model = nn.Sequential(nn.Linear(16, 256), nn.ReLU(), nn.Linear(256, 4))
    record = train(
        model,
        [(x[:48], noisy)] * 60,
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
        validation=(x[48:144], torch.randint(0, 4, (96,), generator=torch.Generator().manual_seed(6))),
        val_every=4,
    )
    finding = only(record, "overfitting")
    _, val = record.scalar_series("val_loss")
    steps, _ = record.scalar_series("val_loss")
    best_step = steps[val.index(min(val))]
    assert finding.evidence["best_val_step"] == best_step
    assert f"step {best_step}" in finding.recommendation
    assert finding.layers == ["1"]  # dropout after the hidden ReLU
    assert "nn.Dropout(p=0.5)" in finding.snippet and "keep_prob = 0.5" in finding.snippet
    assert "weight_decay=0.0001" in finding.snippet and "torch.optim.AdamW" in finding.snippet
    assert "train()" in finding.recommendation and "model.eval()" in finding.snippet


def test_without_val_loss_overfitting_is_skipped_not_guessed(data):
    torch.manual_seed(0)
    record = train(stack([16, 32, 4], nn.ReLU), batches(*data, 32, 2))
    skipped = [f for f in gradscope.diagnose(record) if f.code == "rule-skipped"]
    assert [f.evidence["rule"] for f in skipped] == ["overfitting"]
    assert skipped[0].severity == "info" and "run.log(val_loss=...)" in skipped[0].message


def test_without_activation_statistics_their_rules_are_skipped(data):
    torch.manual_seed(0)
    model = stack([16, 32, 4], nn.ReLU)
    record = train(model, batches(*data, 32, 2), activations=False)
    rules = {f.evidence["rule"] for f in gradscope.diagnose(record) if f.code == "rule-skipped"}
    assert "dead_relu" in rules and "saturation" not in rules  # no tanh/sigmoid: nothing to skip
    assert "vanishing_gradients" not in rules  # grad_rms is enough for it


# ---- BatchNorm ----------------------------------------------------------------------------------------------------


def test_batchnorm_with_batches_of_four(data):
    torch.manual_seed(0)
    model = stack([16, 32, 32, 4], nn.ReLU, norm=True)
    record = train(model, batches(*data, 4, 4))
    finding = only(record, "batchnorm-small-batch")
    assert finding.layers == ["1", "4"]
    assert finding.evidence["median_batch"]["1"] == 4
    assert "nn.GroupNorm" in finding.snippet


def test_batchnorm_that_never_ran_in_training_mode(data):
    torch.manual_seed(0)
    model = stack([16, 32, 32, 4], nn.ReLU, norm=True)
    model.eval()  # the bug: training in eval mode
    record = train(model, batches(*data, 32, 3), mode="eval")
    finding = only(record, "batchnorm-eval-only")
    assert finding.severity == "warning" and finding.layers == ["1", "4"]
    assert "model.train()" in finding.recommendation


# ---- no gradient, AMP ----------------------------------------------------------------------------------------------------


class PartlyFrozen(nn.Module):
    def __init__(self):
        super().__init__()
        self.frozen = nn.Linear(16, 32)
        self.body = nn.Sequential(nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
        self.unused = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)

    def forward(self, x):
        return self.body(self.frozen(x))


def test_frozen_and_unused_parameters_are_info_never_vanishing(data):
    torch.manual_seed(0)
    model = PartlyFrozen()
    params = [p for p in model.parameters() if p.requires_grad]
    record = train(model, batches(*data, 32, 3), optimizer=torch.optim.SGD(params, lr=0.05))
    diagnosis = gradscope.diagnose(record)
    finding = only(record, "no-gradient")
    assert finding.severity == "info"
    assert finding.evidence["frozen_modules"] == ["frozen"] and finding.evidence["unused_modules"] == ["unused"]
    assert set(finding.evidence["parameters"]) == {"frozen.weight", "frozen.bias", "unused.weight", "unused.bias"}
    assert not diagnosis.at_least("warning")


def test_gradscaler_skips_are_amp_overflow_not_exploding(data):
    torch.manual_seed(0)
    model = stack([16, 32, 4], nn.ReLU)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)  # overflows until it has halved twice
    with gradscope.watch(model, optimizer=opt, scaler=scaler) as run:
        for x, y in batches(*data, 32, 12):
            loss = nn.functional.cross_entropy(model(x), y, reduction="sum")
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
            run.log(loss=loss.item())
    record = run.record
    assert record.skipped_steps == [0, 1]
    diagnosis = gradscope.diagnose(record)
    finding = only(record, "amp-overflow")
    assert finding.severity == "info" and finding.steps == record.skipped_steps
    assert "exploding-gradients" not in diagnosis.codes() and "nonfinite" not in diagnosis.codes()
