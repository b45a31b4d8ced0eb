"""A plain MLP classifier with activations called in `forward` (the style of most tutorials).

Twins: a deep `torch.sigmoid` stack at PyTorch's default init (vanishing gradients) and a
`torch.tanh` MLP whose weights were drawn from N(0, 1) (units pinned at +-1: saturation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cases import Case, train_classifier
from .data import class_vectors


class Net(nn.Module):
    def __init__(self, sizes: list[int], act=F.relu, dropout: float = 0.1):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.act = act
        self.dropout = dropout

    def forward(self, x):
        for layer in self.layers[:-1]:
            x = self.act(layer(x))
            x = F.dropout(x, self.dropout, self.training)
        return self.layers[-1](x)


def _train(model: nn.Module, optimizer, steps: int = 40) -> dict:
    return train_classifier(model, optimizer, class_vectors(steps, batch=32, features=20, classes=5))


def healthy():
    torch.manual_seed(0)
    model = Net([20, 64, 64, 5])
    return _train(model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))


def sigmoid_depth():
    torch.manual_seed(0)
    model = Net([20] + [32] * 9 + [5], act=torch.sigmoid, dropout=0.0)
    return _train(model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))


def tanh_saturation():
    torch.manual_seed(0)
    model = Net([20, 64, 64, 5], act=torch.tanh, dropout=0.0)
    for layer in model.layers:
        nn.init.normal_(layer.weight, std=1.0)  # "random normal" init without the 1/sqrt(fan_in) scale
    return _train(model, torch.optim.Adam(model.parameters(), lr=1e-3))


CASES = [
    Case("mlp", "tutorial MLP, F.relu and F.dropout in forward, SGD+momentum", healthy),
    Case("mlp/sigmoid-depth", "10 layers of torch.sigmoid at default init", sigmoid_depth, ("vanishing-gradients",)),
    Case("mlp/tanh-saturation", "torch.tanh with N(0,1) weights", tanh_saturation, ("saturation",)),
]
