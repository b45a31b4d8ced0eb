"""register_gradient_hook gives what tensor.register_hook gives, in the cases that differ in how."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import nn

from gradscope.capture.hooks import Hook, HookErrors, register_gradient_hook


def _linear_then_add(x: torch.Tensor, lin: nn.Linear, watch: Callable) -> torch.Tensor:
    out = watch(lin(x))
    out += x  # in place on the watched output, as a residual block does
    return (torch.relu_(out) * torch.arange(6.0)).sum()


def _linear_then_inplace_view(x: torch.Tensor, lin: nn.Linear, watch: Callable) -> torch.Tensor:
    out = watch(lin(x))
    out.view(-1).mul_(2.0)
    return (out**2).sum()


def _chunks(x: torch.Tensor, lin: nn.Linear, watch: Callable) -> torch.Tensor:
    first, second = lin(x).chunk(2, dim=1)  # two outputs of one autograd node
    return (watch(first) * 3).sum() + (watch(second) ** 2).sum()


def _leaf(x: torch.Tensor, lin: nn.Linear, watch: Callable) -> torch.Tensor:
    return (watch(x) ** 3).sum()  # made by no node


@pytest.mark.parametrize("forward", [_linear_then_add, _linear_then_inplace_view, _chunks, _leaf])
def test_the_same_gradients_as_a_tensor_hook(forward):
    torch.manual_seed(0)
    lin = nn.Linear(6, 6)
    x = torch.randn(4, 6, requires_grad=True)
    by_tensor_hook: list[torch.Tensor] = []
    by_node: list[torch.Tensor] = []
    errors = HookErrors(lambda: 0)

    def watch(t: torch.Tensor) -> torch.Tensor:
        t.register_hook(lambda grad: by_tensor_hook.append(grad.clone()))
        register_gradient_hook(t, Hook("test", lambda grad: by_node.append(grad.clone()), errors))
        return t

    forward(x, lin, watch).backward()
    assert len(by_node) == len(by_tensor_hook) >= 1 and not errors.as_list()
    for ours, reference in zip(sorted(by_node, key=torch.sum), sorted(by_tensor_hook, key=torch.sum)):
        assert torch.equal(ours, reference)


def test_an_output_no_loss_reads_calls_nothing():
    x = torch.randn(4, 6, requires_grad=True)
    first, second = x.mul(2).chunk(2, dim=1)
    seen: list[torch.Tensor] = []
    errors = HookErrors(lambda: 0)
    for t in (first, second):
        register_gradient_hook(t, Hook("test", seen.append, errors))
    (first * 3).sum().backward()
    assert len(seen) == 1 and torch.equal(seen[0], torch.full((4, 3), 3.0))
    assert not errors.as_list()  # a tensor hook would be called with None there
