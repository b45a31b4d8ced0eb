"""The sweep's networks: structure, init schemes, and reproducibility from a seed."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gradscope.sweep import build_network
from gradscope.sweep.networks import activation_gain, hidden_layer_names, hidden_linear_names, recommended_init


def test_blocks_are_linear_norm_activation_dropout_then_head():
    model = build_network(16, 4, "tanh", depth=3, width=8, norm="batchnorm", dropout=0.25)
    names = [name for name, _ in model.named_children()]
    assert names == ["fc1", "bn1", "act1", "drop1", "fc2", "bn2", "act2", "drop2", "fc3", "bn3", "act3", "drop3", "head"]
    assert isinstance(model.bn2, nn.BatchNorm1d) and isinstance(model.act2, nn.Tanh)
    assert model.drop3.p == 0.25
    assert (model.fc1.in_features, model.fc1.out_features, model.head.out_features) == (16, 8, 4)
    assert hidden_layer_names(model) == ["act1", "act2", "act3"]
    assert hidden_linear_names(model) == ["fc1", "fc2", "fc3"]


def test_no_norm_and_no_dropout_add_no_modules():
    model = build_network(5, 2, "relu", depth=2, width=4)
    assert [name for name, _ in model.named_children()] == ["fc1", "act1", "fc2", "act2", "head"]
    assert model(torch.randn(3, 5)).shape == (3, 2)


def test_default_init_is_pytorchs_own_and_reproducible_from_the_seed():
    torch.manual_seed(7)
    model = build_network(16, 4, "sigmoid", depth=2, width=32)
    torch.manual_seed(7)
    by_hand = [nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 4)]
    for mine, theirs in zip([model.fc1, model.fc2, model.head], by_hand):
        assert torch.equal(mine.weight, theirs.weight) and torch.equal(mine.bias, theirs.bias)


def test_kaiming_init_has_he_variance_and_zero_biases():
    torch.manual_seed(0)
    model = build_network(64, 4, "tanh", depth=3, width=512, init="kaiming")
    for layer in (model.fc2, model.fc3):
        assert layer.weight.std().item() == pytest.approx(math.sqrt(2 / 512), rel=0.02)  # gain sqrt 2, any activation
        assert torch.count_nonzero(layer.bias) == 0
    assert model.head.weight.std().item() == pytest.approx(math.sqrt(1 / 512), rel=0.05)
    assert torch.count_nonzero(model.head.bias) == 0


@pytest.mark.parametrize("activation,gain", [("sigmoid", 1.0), ("tanh", 5 / 3), ("relu", math.sqrt(2)), ("identity", 1.0)])
def test_xavier_init_uses_the_activation_gain(activation, gain):
    assert activation_gain(activation) == pytest.approx(gain)
    torch.manual_seed(0)
    model = build_network(256, 4, activation, depth=2, width=256, init="xavier")
    bound = gain * math.sqrt(6 / (256 + 256))
    weight = model.fc2.weight
    assert weight.abs().max().item() <= bound
    assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)  # uniform(-b, b) has std b/sqrt 3
    assert torch.count_nonzero(model.fc2.bias) == 0


@pytest.mark.parametrize("activation", ["leaky_relu", "gelu", "identity"])
def test_extra_activations_build_and_run(activation):
    model = build_network(4, 3, activation, depth=2, width=8, init="xavier")
    assert torch.isfinite(model(torch.randn(5, 4))).all()


@pytest.mark.parametrize(
    "activation,rule,gain",
    [
        ("relu", "kaiming", math.sqrt(2)),
        ("leaky_relu", "kaiming", math.sqrt(2 / (1 + 0.01**2))),  # the activation's own slope
        ("gelu", "kaiming", math.sqrt(2)),  # calculate_gain has no GELU; it is ReLU-like
        ("sigmoid", "xavier", 1.0),
        ("tanh", "xavier", 5 / 3),
        ("identity", "xavier", 1.0),
    ],
)
def test_recommended_init_is_kaiming_for_rectifiers_and_xavier_with_gain_otherwise(activation, rule, gain):
    assert recommended_init(activation) == rule
    torch.manual_seed(0)
    model = build_network(256, 4, activation, depth=3, width=256, init="recommended")
    for layer in (model.fc2, model.fc3):
        # kaiming_normal_(fan_in): std gain/sqrt(n); xavier_uniform_ on a square layer: std gain/sqrt(n) too,
        # inside the bound gain*sqrt(6/(2n))
        assert layer.weight.std().item() == pytest.approx(gain / math.sqrt(256), rel=0.02)
        if rule == "xavier":
            assert layer.weight.abs().max().item() <= gain * math.sqrt(6 / 512)
        else:
            assert layer.weight.abs().max().item() > gain * math.sqrt(6 / 512)  # a normal's tails, not a uniform
        assert torch.count_nonzero(layer.bias) == 0
    head_std = 1 / math.sqrt(256) if rule == "kaiming" else math.sqrt(2 / (256 + 4))  # gain 1 for the head
    assert model.head.weight.std().item() == pytest.approx(head_std, rel=0.1)


def test_recommended_init_draws_the_same_weights_as_the_rule_it_names():
    for activation in ("relu", "tanh"):
        torch.manual_seed(3)
        recommended = build_network(16, 4, activation, depth=2, width=32, init="recommended")
        torch.manual_seed(3)
        named = build_network(16, 4, activation, depth=2, width=32, init=recommended_init(activation))
        for mine, theirs in zip(recommended.parameters(), named.parameters()):
            assert torch.equal(mine, theirs)
