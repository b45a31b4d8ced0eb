"""Real models built to show (or to be free of) each problem, and a tiny watched training loop."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

import gradscope
from gradscope.record import RunRecord


def stack(widths: list[int], activation: Callable[[], nn.Module], norm: bool = False) -> nn.Sequential:
    """Linear (-> BatchNorm1d) -> activation per hidden layer, then a Linear head."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            if norm:
                layers.append(nn.BatchNorm1d(b))
            layers.append(activation())
    return nn.Sequential(*layers)


def classification_data(n: int, features: int = 16, classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels that a small net can learn: the argmax of a fixed random projection."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    teacher = torch.randn(features, classes, generator=torch.Generator().manual_seed(1234))
    return x, (x @ teacher).argmax(1)


def batches(x: torch.Tensor, y: torch.Tensor, size: int, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for step in range(steps):
        start = (step * size) % x.shape[0]
        idx = torch.arange(start, start + size) % x.shape[0]
        out.append((x[idx], y[idx]))
    return out


def train(
    model: nn.Module,
    data: list[tuple[torch.Tensor, torch.Tensor]],
    optimizer: Optional[torch.optim.Optimizer] = None,
    loss_fn: Callable = nn.functional.cross_entropy,
    validation: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    val_every: int = 1,
    mode: str = "train",
    **watch_options,
) -> RunRecord:
    """The user's ordinary loop under gradscope.watch; logs loss (and val_loss in eval mode)."""
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=0.05)
    with gradscope.watch(model, optimizer=optimizer, **watch_options) as run:
        for step, (x, y) in enumerate(data):
            model.train(mode == "train")
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            values = {"loss": loss.item()}
            if validation is not None and step % val_every == val_every - 1:
                model.eval()
                with torch.no_grad():
                    values["val_loss"] = loss_fn(model(validation[0]), validation[1]).item()
            run.log(**values)
    return run.record
