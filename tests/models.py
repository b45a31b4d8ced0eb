"""Small real models shared by the tests."""

from __future__ import annotations

import torch
from torch import nn


def mlp(widths=(8, 16, 16, 3), activation=nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """Conv-BN-ReLU(inplace) twice with an in-place residual add: the pattern that breaks
    module backward hooks."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)  # the same ReLU instance, called twice


class SmallResNet(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.block = ResidualBlock(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.block(self.stem(x))).flatten(1)
        return self.head(self.dropout(x))


def classification_batches(n_batches: int, batch: int = 16, features: int = 8, classes: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, features, generator=g), torch.randint(0, classes, (batch,), generator=g))
        for _ in range(n_batches)
    ]


def image_batches(n_batches: int, batch: int = 8, classes: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, 3, 8, 8, generator=g), torch.randint(0, classes, (batch,), generator=g))
        for _ in range(n_batches)
    ]


def all_hooks(model: nn.Module, optimizer=None) -> int:
    """Number of hooks of any kind left on a model, its parameters and an optimizer."""
    count = 0
    for module in model.modules():
        for attr in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
            "_state_dict_hooks",
            "_load_state_dict_pre_hooks",
        ):
            count += len(getattr(module, attr, {}) or {})
    for param in model.parameters():
        count += len(param._backward_hooks or {})
        count += len(getattr(param, "_post_accumulate_grad_hooks", None) or {})
    if optimizer is not None:
        count += len(optimizer._optimizer_step_pre_hooks) + len(optimizer._optimizer_step_post_hooks)
    return count


def train_steps(model: nn.Module, optimizer, batches, run=None, set_to_none: bool = True) -> None:
    """One plain cross-entropy step per batch; logs the loss when given a watcher."""
    for x, y in batches:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=set_to_none)
        if run is not None:
            run.log(loss=loss.item())
