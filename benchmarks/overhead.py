"""Training-step time with gradscope attached over without, measured side by side.

    python benchmarks/overhead.py [--rounds 12] [--steps 5]

Blocks of `--steps` plain steps and watched steps alternate in one process, so both see the
same machine load; the ratio of the medians is what is printed (absolute times on a shared
machine mean little). Also shown: the obvious way of writing statistics hooks (per-layer
`.item()` calls), for reference.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

import gradscope


def tanh_mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    layers: list[nn.Module] = [nn.Linear(784, 512), nn.Tanh()]
    for _ in range(10):
        layers += [nn.Linear(512, 512), nn.Tanh()]
    layers.append(nn.Linear(512, 10))
    return nn.Sequential(*layers), torch.randn(256, 784), torch.randint(0, 10, (256,))


def small_cnn() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    layers: list[nn.Module] = []
    channels = 3
    for width in (32, 64, 64, 128):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        channels = width
        if width != 128:
            layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10)]
    return nn.Sequential(*layers), torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))


class NaiveItemHooks:
    """What statistics hooks look like when written the obvious way: `.item()` per layer."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.values: list[float] = []
        self.handles: list = []

    def __enter__(self) -> "NaiveItemHooks":
        for module in self.model.modules():
            if next(module.children(), None) is None:
                self.handles.append(module.register_forward_hook(self._forward))
        for p in self.model.parameters():
            self.handles.append(p.register_post_accumulate_grad_hook(self._grad))
        return self

    def _forward(self, module: nn.Module, args, out: torch.Tensor) -> None:
        if torch.is_grad_enabled():
            d = out.detach()
            self.values += [(d == 0).float().mean().item(), d.mean().item(), d.std().item()]

    def _grad(self, p: torch.Tensor) -> None:
        g = p.grad
        self.values += [g.norm().item(), g.abs().mean().item(), g.abs().max().item()]

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.values.clear()


def time_steps(model, x, y, opt, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - start)
    return times


def measure(build: Callable, rounds: int, steps: int) -> dict[str, float]:
    """Median step time of each variant over the plain median (`every=10`: mean over whole windows)."""
    torch.manual_seed(0)
    model, x, y = build()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    time_steps(model, x, y, opt, 3)  # warm-up: allocator, kernels
    samples: dict[str, list[float]] = {"plain": [], "gradscope": [], "gradscope every=10": [], "naive .item() hooks": []}
    for _ in range(rounds):
        samples["plain"] += time_steps(model, x, y, opt, steps)
        with gradscope.watch(model, optimizer=opt):
            samples["gradscope"] += time_steps(model, x, y, opt, steps)
        with gradscope.watch(model, optimizer=opt, every=10):
            samples["gradscope every=10"] += time_steps(model, x, y, opt, 2 * steps)
        with NaiveItemHooks(model):
            samples["naive .item() hooks"] += time_steps(model, x, y, opt, steps)
    medians = {k: statistics.median(v) for k, v in samples.items()}
    # every=10: one recorded step per 10, so the cost is the mean over whole windows, not a median
    medians["gradscope every=10"] = statistics.mean(samples["gradscope every=10"]) * medians["plain"] / statistics.mean(
        samples["plain"]
    )
    return {k: v / medians["plain"] for k, v in medians.items() if k != "plain"} | {"plain_ms": medians["plain"] * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; every step recorded, all default statistics")
    for name, build in (("12-layer tanh MLP, width 512, batch 256", tanh_mlp), ("4-block CNN + BN, 32x32, batch 64", small_cnn)):
        result = measure(build, args.rounds, args.steps)
        print(
            f"{name:42s} gradscope {result['gradscope']:.3f}x   every=10 {result['gradscope every=10']:.3f}x   "
            f"naive .item() hooks {result['naive .item() hooks']:.3f}x   (plain step {result['plain_ms']:.0f} ms, for scale)"
        )


if __name__ == "__main__":
    main()
