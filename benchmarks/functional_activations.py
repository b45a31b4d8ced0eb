"""The cost of measuring activations called as functions (F.relu, torch.tanh) where a layer reads them.

    python benchmarks/functional_activations.py [--rounds 8] [--steps 5]

Blocks of plain steps, steps watched without functional capture (`functional_activations=False`)
and steps watched with it (the default) alternate in one process, so all see the same machine
load; printed are the ratios of the median step times to the plain one.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from overhead import Bench, time_steps  # the same timed step as the main overhead benchmark
from torch import nn

import gradscope


class FunctionalMLP(nn.Module):
    def __init__(self, width: int = 512, depth: int = 8):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(784, width)] + [nn.Linear(width, width) for _ in range(depth)])
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        for layer in self.layers:
            x = F.relu(layer(x))
        return self.head(x)


class FunctionalCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in ((3, 32), (32, 64), (64, 64), (64, 128)))
        self.head = nn.Linear(128, 10)

    def forward(self, x):
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            if i < 3:
                x = F.max_pool2d(x, 2)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def measure(model, x, y, rounds: int, count: int) -> dict[str, float]:
    bench = Bench("functional", model, lambda: (x, y))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def steps(n: int) -> list[float]:
        return time_steps(bench, opt, n, "cpu")

    steps(3)  # warm-up
    samples: dict[str, list[float]] = {"plain": [], "without": [], "with": []}
    for _ in range(rounds):
        samples["plain"] += steps(count)
        with gradscope.watch(model, optimizer=opt, functional_activations=False):
            samples["without"] += steps(count)
        with gradscope.watch(model, optimizer=opt):
            samples["with"] += steps(count)
    medians = {k: statistics.median(v) for k, v in samples.items()}
    return {k: v / medians["plain"] for k, v in medians.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; every step recorded")
    for name, model, x, y in (
        ("9-layer F.relu MLP, width 512, batch 256", FunctionalMLP(), torch.randn(256, 784), torch.randint(0, 10, (256,))),
        ("4-conv F.relu CNN, 32x32, batch 64", FunctionalCNN(), torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))),
    ):
        r = measure(model, x, y, args.rounds, args.steps)
        print(
            f"{name:42s} watched without functional capture {r['without']:.3f}x   with it {r['with']:.3f}x   "
            f"(functional capture adds {r['with'] / r['without']:.3f}x)"
        )


if __name__ == "__main__":
    main()
