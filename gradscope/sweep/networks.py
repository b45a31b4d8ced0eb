"""The networks a sweep trains: `depth` hidden blocks of `width` units, then a classifier head.

Each hidden block is Linear -> [BatchNorm1d] -> activation -> [Dropout]. The layers sit in
one flat `nn.Sequential` with readable names (fc1, bn1, act1, drop1, ..., head), so a
RunRecord of a sweep network lists them in an obvious order.

Reproducibility: the caller seeds torch; modules are created block by block (each Linear
draws PyTorch's default init from the global generator as it is built), then `init`
re-draws the Linear weights in the same order. A hand-built stack created in that order
from the same seed holds identical weights, which the tests rely on.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
from torch import nn

# name -> factory of the activation module; the name is also what RunRecord calls the kind.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,  # negative slope LEAKY_SLOPE
    "gelu": nn.GELU,
    "identity": nn.Identity,
}

NORMS: tuple[str, ...] = ("none", "batchnorm")
# "recommended" pairs each activation with the init derived for it (Glorot & Bengio 2010 for the
# saturating ones, He et al. 2015 for the rectifiers); "xavier" and "kaiming" apply one rule to all.
INITS: tuple[str, ...] = ("default", "recommended", "xavier", "kaiming")

# The activations whose recommended init is Kaiming (fan_in); the others get Xavier with their gain.
RECTIFIERS: tuple[str, ...] = ("relu", "leaky_relu", "gelu")
LEAKY_SLOPE = 0.01  # nn.LeakyReLU's default negative slope

# nn.init.calculate_gain knows no "gelu" or "identity"; GELU is ReLU-like for positive inputs.
_GAIN_NAME = {"gelu": "relu", "identity": "linear"}


class SweepMLP(nn.Sequential):
    """A plain deep MLP; a class of its own so records name it (meta.model_class)."""


def activation_gain(activation: str) -> float:
    """The gain `xavier_uniform_` uses for a hidden layer followed by `activation`."""
    name = _GAIN_NAME.get(activation, activation)
    if name == "leaky_relu":
        return nn.init.calculate_gain("leaky_relu", LEAKY_SLOPE)
    return nn.init.calculate_gain(name)


def recommended_init(activation: str) -> str:
    """What `init="recommended"` means for `activation`: "kaiming" for rectifiers, else "xavier"."""
    return "kaiming" if activation in RECTIFIERS else "xavier"


def build_network(
    in_features: int,
    num_classes: int,
    activation: str,
    depth: int,
    width: int,
    norm: str = "none",
    dropout: float = 0.0,
    init: str = "default",
) -> SweepMLP:
    """Create the network of one sweep configuration (seed torch before calling)."""
    layers: "OrderedDict[str, nn.Module]" = OrderedDict()
    fan_in = in_features
    for index in range(1, depth + 1):
        layers[f"fc{index}"] = nn.Linear(fan_in, width)
        if norm == "batchnorm":
            layers[f"bn{index}"] = nn.BatchNorm1d(width)
        layers[f"act{index}"] = ACTIVATIONS[activation]()
        if dropout > 0:
            layers[f"drop{index}"] = nn.Dropout(dropout)
        fan_in = width
    layers["head"] = nn.Linear(fan_in, num_classes)
    model = SweepMLP(layers)
    apply_init(model, activation, init)
    return model


def apply_init(model: nn.Module, activation: str, init: str) -> None:
    """Re-draw every Linear layer's weights (forward order) according to `init`.

    default:     keep PyTorch's own Linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases.
    recommended: the init made for the activation: kaiming_normal_(mode="fan_in") with the activation's
                 own nonlinearity for relu/leaky_relu/gelu (GELU takes ReLU's gain), xavier_uniform_ with
                 calculate_gain(activation) for sigmoid/tanh/identity; gain 1 for the head, zero biases.
    xavier:      xavier_uniform_ with gain calculate_gain(activation) (gain 1 for the head), zero biases.
    kaiming:     kaiming_normal_(mode="fan_in") with PyTorch's default gain sqrt(2) for every hidden
                 layer whatever the activation (He et al. 2015 derived it for ReLU; that is the point of
                 comparing it across activations), gain 1 for the head, zero biases.
    """
    if init == "default":
        return
    # Only "recommended" follows the activation's own slope; "kaiming" keeps ReLU's gain for all.
    rectifier = "leaky_relu" if init == "recommended" and activation == "leaky_relu" else "relu"
    if init == "recommended":
        init = recommended_init(activation)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for position, linear in enumerate(linears):
            is_head = position == len(linears) - 1
            if init == "xavier":
                nn.init.xavier_uniform_(linear.weight, gain=1.0 if is_head else activation_gain(activation))
            elif init == "kaiming":
                nn.init.kaiming_normal_(linear.weight, a=LEAKY_SLOPE if rectifier == "leaky_relu" else 0.0,
                                        mode="fan_in", nonlinearity="linear" if is_head else rectifier)
            else:
                raise ValueError(f"unknown init {init!r}")
            nn.init.zeros_(linear.bias)


def hidden_layer_names(model: nn.Module) -> list[str]:
    """Names of the activation modules, one per hidden block, first block first.

    The backprop signal of "hidden layer l" is the gradient of the loss with respect to the
    output of act<l>: the chain-rule signal after the nonlinearity of block l.
    """
    return [name for name, _ in model.named_children() if name.startswith("act")]


def hidden_linear_names(model: nn.Module) -> list[str]:
    """Names of the hidden Linear layers (fc1 ... fc<depth>), the head excluded."""
    return [name for name, _ in model.named_children() if name.startswith("fc")]
