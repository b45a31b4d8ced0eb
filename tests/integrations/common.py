"""What the framework tests share: a deep sigmoid network, its batches, and the plain-loop reference."""

from __future__ import annotations

import torch
from torch import nn

import gradscope

DEPTH, WIDTH, FEATURES, CLASSES = 8, 16, 16, 4
ACCUMULATE, CLIP, LR = 2, 0.05, 0.1


def deep_sigmoid() -> nn.Sequential:
    """Eight sigmoid layers at PyTorch's default init: the backprop signal shrinks ~x0.1 per layer."""
    layers: list[nn.Module] = []
    for i in range(DEPTH):
        layers += [nn.Linear(FEATURES if i == 0 else WIDTH, WIDTH), nn.Sigmoid()]
    layers.append(nn.Linear(WIDTH, CLASSES))
    return nn.Sequential(*layers)


def batches(count: int, size: int = 8, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, FEATURES, generator=g), torch.randint(0, CLASSES, (size,), generator=g))
        for _ in range(count)
    ]


def plain_loop_record(net: nn.Module, data, clip: float = CLIP, accumulate: int = ACCUMULATE):
    """The same training written by hand: mean loss over micro-batches, clip_grad_norm_, SGD."""
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    with gradscope.watch(net, optimizer=opt) as run:
        for i, (x, y) in enumerate(data):
            loss = nn.functional.cross_entropy(net(x), y) / accumulate
            loss.backward()
            if (i + 1) % accumulate == 0:
                torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
                opt.step()
                opt.zero_grad()
    return run.record


def assert_same_gradient_statistics(record, reference, prefix: str = "") -> None:
    """Per parameter and step, the gradient-side statistics agree to float rounding (None where None)."""
    import pytest

    assert record.steps == reference.steps
    for name in reference.param_stats:
        stats = ("grad_norm", "grad_norm_preclip", "clip_factor", "grad_rms", "grad_max", "weight_norm", "update_ratio")
        for stat in stats:
            got, want = record.series(stat, prefix + name), reference.series(stat, name)
            assert [v is None for v in got] == [v is None for v in want], (stat, name)
            assert [v for v in got if v is not None] == pytest.approx([v for v in want if v is not None], rel=1e-5), (
                stat,
                name,
            )


def assert_clipped_at(record, clip: float) -> None:
    """Every step's total gradient was above `clip` before clipping, and the optimizer used `clip`."""
    import pytest

    from gradscope.summary import summary_scalars

    for index in range(len(record.steps)):
        summary = summary_scalars(record, index)
        assert summary["gradscope/grad_norm_total_preclip"] > clip
        assert summary["gradscope/grad_norm_total"] == pytest.approx(clip, rel=1e-4)
        assert summary["gradscope/clip_factor"] < 1
