"""The sweep's numbers against theory and against an independent measurement.

The reference below builds the same architecture by hand from the same seed, runs one
forward/backward with retain_grad on every hidden layer's output and computes the norms
itself; no gradscope code is involved. Theory (per layer, going backwards, width 64):
  PyTorch default Linear init draws U(-1/sqrt(n), 1/sqrt(n)), variance 1/(3n), so a layer
  scales the backward signal by sqrt(1/3) = 0.577 times the activation's derivative:
  tanh (tanh' ~ 1 near 0) ~0.58, ReLU (half the units pass) 0.577 * sqrt(1/2) ~0.41,
  sigmoid (sigma' <= 1/4) ~0.14. Kaiming (gain sqrt 2) makes ReLU's factor 1.
  The recommended init pairs each activation with its own: Kaiming for ReLU (factor ~1), Xavier
  with gain 5/3 for tanh (~1), Xavier with gain 1 for sigmoid, whose factor stays near
  sigma'(0) = 1/4 because no weight scale undoes a derivative that small.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradscope
from gradscope.report import sweep_table
from gradscope.sweep import bundled_task, fit_decay_factor
from gradscope.sweep.reading import describe
from gradscope.sweep.summary import DIVERGED, TRAINED

DATA = bundled_task()
WIDTH = 64


def reference_backprop(activation: str, depth: int, init: str, seed: int = 0, batchnorm: bool = False):
    """Per-hidden-layer ||dLoss/d(activation output)|| and sparsity, by hand (no gradscope)."""
    act_cls = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}[activation]
    torch.manual_seed(seed)
    linears, norms = [], []
    fan_in = DATA.X.shape[1]
    for _ in range(depth):
        linears.append(nn.Linear(fan_in, WIDTH))
        norms.append(nn.BatchNorm1d(WIDTH) if batchnorm else nn.Identity())
        fan_in = WIDTH
    head = nn.Linear(fan_in, DATA.num_classes)
    if init == "recommended" and activation != "relu":
        with torch.no_grad():
            for layer in linears:
                nn.init.xavier_uniform_(layer.weight, gain=nn.init.calculate_gain(activation))
                layer.bias.zero_()
            nn.init.xavier_uniform_(head.weight, gain=1.0)
            head.bias.zero_()
    if init == "kaiming" or (init == "recommended" and activation == "relu"):
        with torch.no_grad():
            for layer in linears:
                nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
                layer.bias.zero_()
            nn.init.kaiming_normal_(head.weight, mode="fan_in", nonlinearity="linear")
            head.bias.zero_()
    h = torch.from_numpy(DATA.X)
    outputs = []
    for linear, norm in zip(linears, norms):
        h = act_cls()(norm(linear(h)))
        h.retain_grad()
        outputs.append(h)
    F.cross_entropy(head(h), torch.from_numpy(DATA.y)).backward()
    signal = [float(torch.sqrt((o.grad.double() ** 2).sum())) for o in outputs]
    sparsity = [float((o == 0).double().mean()) for o in outputs]
    reference_backprop.grad_rms = [  # weight and bias together, as statdefs defines grad_rms
        float(torch.cat([fc.weight.grad.double().flatten(), fc.bias.grad.double()]).pow(2).mean().sqrt()) for fc in linears
    ]
    return signal, sparsity


def init_sweep(activations, depths, init="default", norms=("none",)):
    """One recorded step: step 0's statistics are those of the initial weights."""
    return gradscope.sweep(activations=activations, depths=depths, init=init, norms=norms, steps=1, workers=1)


@pytest.fixture(scope="module")
def default_depth8():
    return init_sweep(("sigmoid", "tanh", "relu"), (8,))


@pytest.fixture(scope="module")
def kaiming_depth8():
    return init_sweep(("sigmoid", "tanh", "relu"), (8,), init="kaiming")


@pytest.fixture(scope="module")
def both_inits_depth8():
    return init_sweep(("sigmoid", "tanh", "relu"), (8,), init=("default", "recommended"))


def test_recommended_init_keeps_relu_and_tanh_while_sigmoid_still_shrinks(both_inits_depth8):
    factor = {}
    for activation in ("sigmoid", "tanh", "relu"):
        summary = both_inits_depth8.summary(activation, 8, init="recommended")
        signal, _ = reference_backprop(activation, 8, "recommended")
        np.testing.assert_allclose(summary.backprop.init, signal, rtol=1e-4)  # the same weights, measured by hand
        factor[activation] = summary.decay_factor_init
    assert 0.85 < factor["relu"] < 1.2 and 0.85 < factor["tanh"] < 1.2
    assert factor["sigmoid"] == pytest.approx(0.24, abs=0.03)  # sigma' <= 1/4: no init repairs it


def test_default_init_numbers_are_unchanged_by_running_both_inits(both_inits_depth8, default_depth8):
    # measured before inits became a list (main at 68e0ee1): default init, depth 8, seed 0
    before = {"sigmoid": 0.13921590805974732, "tanh": 0.5598625394444823, "relu": 0.40980862887952046}
    for activation, factor in before.items():
        both = both_inits_depth8.summary(activation, 8, init="default")
        assert both.decay_factor_init == pytest.approx(factor, rel=1e-6)
        assert default_depth8.summary(activation, 8).decay_factor_init == pytest.approx(factor, rel=1e-6)


def test_step_0_statistics_are_those_of_the_initial_weights(default_depth8):
    signal, _ = reference_backprop("sigmoid", 8, "default")
    summary = default_depth8.summary("sigmoid", 8)
    np.testing.assert_allclose(summary.backprop.init, signal, rtol=1e-4)
    np.testing.assert_allclose(summary.grad_rms.init, reference_backprop.grad_rms, rtol=1e-4)


def test_sigmoid_default_init_decays_by_about_0_14_per_layer(default_depth8):
    reference = fit_decay_factor(reference_backprop("sigmoid", 8, "default")[0])
    measured = default_depth8.summary("sigmoid", 8).decay_factor_init
    assert 0.12 < reference < 0.16  # at most 1/4 from sigma', times sqrt(1/3) from the weight scale
    assert measured == pytest.approx(reference, rel=0.10)


def test_relu_kaiming_keeps_the_factor_near_one(kaiming_depth8):
    reference = fit_decay_factor(reference_backprop("relu", 8, "kaiming")[0])
    measured = kaiming_depth8.summary("relu", 8).decay_factor_init
    assert 0.9 < reference < 1.3
    assert measured == pytest.approx(reference, rel=0.10)


def test_default_init_makes_relu_and_tanh_decay_too(default_depth8):
    relu = default_depth8.summary("relu", 8).decay_factor_init
    tanh = default_depth8.summary("tanh", 8).decay_factor_init
    sigmoid = default_depth8.summary("sigmoid", 8).decay_factor_init
    assert relu == pytest.approx(math.sqrt(1 / 3) * math.sqrt(1 / 2), rel=0.10)  # ~0.41
    assert tanh == pytest.approx(math.sqrt(1 / 3), rel=0.10)  # ~0.58
    assert sigmoid < relu < tanh
    assert "0.41" in sweep_table(default_depth8) and "0.56" in sweep_table(default_depth8)  # visible in the table


def test_kaiming_first_last_ratio_sigmoid_vanishes_tanh_and_relu_do_not(kaiming_depth8):
    ratio = {a: kaiming_depth8.summary(a, 8).first_last_ratio_init for a in ("sigmoid", "tanh", "relu")}
    assert ratio["sigmoid"] < ratio["tanh"] / 100
    assert ratio["sigmoid"] < ratio["relu"] / 100
    # tanh and ReLU both keep the signal within a factor 2 over 8 layers. Which of the two is
    # larger depends on the seed: at He's gain sqrt(2), tanh sits slightly on the chaotic side
    # (2 * E[tanh'^2] > 1), ReLU exactly at 1, so finite-width noise decides.
    assert 0.5 < ratio["tanh"] < 2 and 0.5 < ratio["relu"] < 2
    tanh_factor = kaiming_depth8.summary("tanh", 8).decay_factor_init
    assert 0.95 < tanh_factor < 1.15


@pytest.mark.parametrize("init", ["default", "kaiming"])
def test_relu_output_sparsity_at_init_is_one_half(init, default_depth8, kaiming_depth8):
    result = default_depth8 if init == "default" else kaiming_depth8
    measured = result.summary("relu", 8).sparsity.init
    _, reference = reference_backprop("relu", 8, init)
    # 512 samples x 64 units is above gradscope's exact-count limit: sparsity is a row-sampled estimate
    np.testing.assert_allclose(measured, reference, atol=0.02)
    assert np.mean(measured) == pytest.approx(0.5, abs=0.05)
    assert measured[0] == pytest.approx(0.5, abs=0.05)


def test_batchnorm_rescues_a_deep_sigmoid_stack():
    result = init_sweep(("sigmoid",), (16,), norms=("none", "batchnorm"))
    plain = result.summary("sigmoid", 16, "none").first_last_ratio_init
    normed = result.summary("sigmoid", 16, "batchnorm").first_last_ratio_init
    reference, _ = reference_backprop("sigmoid", 16, "default", batchnorm=True)
    assert normed == pytest.approx(reference[0] / reference[-1], rel=1e-3)
    assert normed >= 100 * plain


def test_dropout_shrinks_the_train_validation_gap_on_a_small_training_set():
    # 128 samples (10% noisy labels) are memorised by a 3-layer ReLU net; dropout 0.5 after each
    # layer keeps it from fitting the noise as confidently. (At depth 1-2 this task's nets
    # memorise with or without dropout: the effect needs a few noisy layers.)
    small = bundled_task(n_train=128, n_val=256)
    result = gradscope.sweep(
        activations=("relu",), depths=(3,), dropouts=(0.0, 0.5), init="kaiming", steps=200, data=small, workers=1
    )
    without = result.summary("relu", 3, dropout=0.0)
    with_dropout = result.summary("relu", 3, dropout=0.5)
    assert without.train_accuracy > 0.95  # it memorises the training set, noise included
    assert with_dropout.generalization_gap < 0.75 * without.generalization_gap
    assert with_dropout.val_loss < without.val_loss


def test_relu_at_kaiming_init_diverges_at_depth_16_while_tanh_at_xavier_trains():
    # A flowing gradient is not enough: at lr 0.1 (momentum 0.9) the 16-layer ReLU network keeps its
    # signal at init (x~1 per layer) and still ends above its first loss; tanh at Xavier trains.
    result = gradscope.sweep(activations=("tanh", "relu"), depths=(16,), init="recommended", steps=100, workers=1)
    relu, tanh = result.summary("relu", 16), result.summary("tanh", 16)
    assert 0.85 < relu.decay_factor_init < 1.2
    assert relu.train_loss > relu.first_loss and relu.outcome == DIVERGED
    assert tanh.train_loss < 0.5 * tanh.first_loss and tanh.outcome == TRAINED
    lines = describe(result)
    assert any(line.startswith("Diverged instead of training: relu, depth 16 at lr 0.1: its training loss went from "
                               f"{relu.first_loss:.3g} at step 0 to {relu.train_loss:.3g}") for line in lines)
    assert "tanh trains at depth 16." in lines and "relu does not train at depth 16 (diverges at depth 16)." in lines
