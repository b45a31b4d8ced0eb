"""How long the default depth sweep takes, and what recording costs.

    python benchmarks/sweep_time.py [--steps 100] [--skip-parallel]

Target: the default sweep (sigmoid/tanh/relu x depths 2,4,8,16 x inits default,recommended:
24 networks, width 64, 100 steps) in no more time than the sweep it replaced (the same three
activations x depths 2,4,8,16,32 at the default init only: 15 networks), and under 30 s on
2 cores. Printed side by side, all measured in this one process:
  plain     the 24 networks trained by a plain loop (same data, init, optimizer and per-step
            validation), no gradscope, one after the other;
  sweep x1  gradscope.sweep(workers=1): the same work, recorded; and the previous default
            (15 networks, one init) the same way;
  sweep     gradscope.sweep() with its default workers (one process per core), and the
            previous default the same way.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn

import gradscope
from gradscope.sweep import DEFAULT_ACTIVATIONS, DEFAULT_DEPTHS, DEFAULT_INITS, build_network, bundled_task
from gradscope.sweep.config import MOMENTUM
from gradscope.sweep.runner import default_workers

DEFAULT = dict(activations=DEFAULT_ACTIVATIONS, depths=DEFAULT_DEPTHS, init=DEFAULT_INITS)
BEFORE = dict(activations=("sigmoid", "tanh", "relu"), depths=(2, 4, 8, 16, 32), init="default")


def plain_loop(steps: int) -> float:
    """Train every network the sweep trains, without gradscope; seconds."""
    data = bundled_task()
    X, y = torch.from_numpy(data.X), torch.from_numpy(data.y)
    X_val, y_val = torch.from_numpy(data.X_val), torch.from_numpy(data.y_val)
    loss_fn = nn.CrossEntropyLoss()
    started = time.perf_counter()
    for activation in DEFAULT["activations"]:
        for depth, init in ((d, i) for d in DEFAULT["depths"] for i in DEFAULT["init"]):
            torch.manual_seed(0)
            model = build_network(data.num_features, data.num_classes, activation, depth, 64, init=init)
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


def timed_sweep(steps: int, workers, options=DEFAULT):
    """Wall seconds, this process's CPU seconds (all the work when workers=1) and the result."""
    started, cpu_started = time.perf_counter(), time.process_time()
    result = gradscope.sweep(**options, steps=steps, workers=workers)
    return time.perf_counter() - started, time.process_time() - cpu_started, result


def _work(result) -> float:
    return sum(s.seconds for s in result.summaries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--skip-parallel", action="store_true")
    parser.add_argument("--skip-plain", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in the sweep's workers: these networks are too small for intra-op threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"cores: {cores}, load average before: {load:.1f}, torch {torch.__version__}, steps {args.steps}")
    # "cpu s": this process's CPU time, the whole work when workers=1 and barely moved by other
    # programs on the cores (wall time is not, on a shared machine). "config s": the
    # configurations' own wall times added up; beside the total it shows what process start-up
    # costs and how much other programs slowed us.
    print(f"{'':28s} {'seconds':>8s} {'cpu s':>8s} {'processes':>10s} {'config s':>9s}", flush=True)

    def show(label, seconds, cpu, workers, work):
        print(f"{label:28s} {seconds:8.1f} {cpu:8.1f} {workers:10d} {work:9.1f}", flush=True)

    if not args.skip_plain:
        cpu_started = time.process_time()
        plain = plain_loop(args.steps)
        show("plain loop, no gradscope", plain, time.process_time() - cpu_started, 1, plain)
    sequential, sequential_cpu, result = timed_sweep(args.steps, workers=1)
    show("sweep, workers=1", sequential, sequential_cpu, 1, _work(result))
    before_sequential, before_cpu, previous = timed_sweep(args.steps, workers=1, options=BEFORE)
    show("before: 15 nets, workers=1", before_sequential, before_cpu, 1, _work(previous))
    if not args.skip_parallel:
        parallel, parallel_cpu, pooled = timed_sweep(args.steps, workers=None)
        show("sweep, default workers", parallel, parallel_cpu, default_workers(pooled.configs), _work(pooled))
        before, before_parallel_cpu, previous = timed_sweep(args.steps, workers=None, options=BEFORE)
        show("before, default workers", before, before_parallel_cpu, default_workers(previous.configs), _work(previous))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average after: {load:.1f}")
    failed = [s.config.label_with_init for s in result.failures]
    print(f"configurations: {len(result.summaries)} (before: {len(previous.summaries)}), failed: {failed or 'none'}; "
          "target: no slower than before, < 30 s on 2 cores")
    print(f"default sweep / previous default sweep, CPU seconds with workers=1: {sequential_cpu / before_cpu:.2f}")
    if not args.skip_parallel:
        print(f"default sweep / previous default sweep, wall seconds with default workers: {parallel / before:.2f}")


if __name__ == "__main__":
    main()
