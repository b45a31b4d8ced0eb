"""How long the default depth sweep takes, and what recording costs.

    python benchmarks/sweep_time.py [--steps 100] [--skip-parallel]

Target: the default sweep (sigmoid/tanh/relu x depths 2,4,8,16,32, width 64, 100 steps) in
under 30 s on 2 cores. Printed side by side, all measured in this one process:
  plain     the same 15 networks trained by a plain loop (same data, init, optimizer and
            per-step validation), no gradscope, one after the other;
  sweep x1  gradscope.sweep(workers=1): the same work, recorded;
  sweep     gradscope.sweep() with its default workers (one process per core).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn

import gradscope
from gradscope.sweep import build_network, bundled_task
from gradscope.sweep.config import MOMENTUM
from gradscope.sweep.runner import default_workers

ACTIVATIONS = ("sigmoid", "tanh", "relu")
DEPTHS = (2, 4, 8, 16, 32)


def plain_loop(steps: int) -> float:
    """Train every network the sweep trains, without gradscope; seconds."""
    data = bundled_task()
    X, y = torch.from_numpy(data.X), torch.from_numpy(data.y)
    X_val, y_val = torch.from_numpy(data.X_val), torch.from_numpy(data.y_val)
    loss_fn = nn.CrossEntropyLoss()
    started = time.perf_counter()
    for activation in ACTIVATIONS:
        for depth in DEPTHS:
            torch.manual_seed(0)
            model = build_network(data.num_features, data.num_classes, activation, depth, 64)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=MOMENTUM)
            for _ in range(steps):
                logits = model(X)
                loss = loss_fn(logits, y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                model.eval()
                with torch.no_grad():
                    float(loss_fn(model(X_val), y_val))
                model.train()
                loss.item(), float((logits.argmax(1) == y).float().mean())
    return time.perf_counter() - started


def timed_sweep(steps: int, workers):
    started = time.perf_counter()
    result = gradscope.sweep(activations=ACTIVATIONS, depths=DEPTHS, steps=steps, workers=workers)
    return time.perf_counter() - started, result


def _work(result) -> float:
    return sum(s.seconds for s in result.summaries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--skip-parallel", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in the sweep's workers: these networks are too small for intra-op threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"cores: {cores}, load average before: {load:.1f}, torch {torch.__version__}, steps {args.steps}")

    plain = plain_loop(args.steps)
    sequential, result = timed_sweep(args.steps, workers=1)
    rows = [("plain loop, no gradscope", plain, 1, plain), ("sweep, workers=1", sequential, 1, _work(result))]
    if not args.skip_parallel:
        parallel, pooled = timed_sweep(args.steps, workers=None)
        rows.append(("sweep, default workers", parallel, default_workers(pooled.configs), _work(pooled)))
    # "config s": the configurations' own wall times added up. Beside the total it shows what
    # process start-up costs and, when other programs share the cores, how much they slowed us.
    print(f"{'':28s} {'seconds':>8s} {'x plain':>8s} {'processes':>10s} {'config s':>9s}")
    for label, seconds, workers, work in rows:
        print(f"{label:28s} {seconds:8.1f} {seconds / plain:8.2f} {workers:10d} {work:9.1f}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average after: {load:.1f}")
    failed = [s.config.label for s in result.failures]
    print(f"configurations: {len(result.summaries)}, failed: {failed or 'none'}; target: default sweep < 30 s on 2 cores")


if __name__ == "__main__":
    main()
