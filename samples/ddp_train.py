"""gradscope under DistributedDataParallel: every rank watches, rank 0 writes the record and report.

Run (two processes on the CPU, gloo backend):

    torchrun --nproc_per_node 2 samples/ddp_train.py --out run.json

Each rank trains on its half of every global batch; gradscope combines the ranks once per
recorded step, so the statistics are those of the global batch and of the all-reduced
gradients the optimizer uses. Only rank 0 writes `run.json` and prints the per-layer table;
the other ranks touch no output file. Same model and task as samples/watch_training.py.

It is also a model file for a single process (`gradscope analyze samples/ddp_train.py`):
gradscope should find: vanishing-gradients. Six sigmoid layers at default initialization.
"""

from __future__ import annotations

import argparse
import os
from typing import Optional

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import gradscope
from gradscope.report.text import render_text

GLOBAL_BATCH = 64


def build_model() -> nn.Sequential:
    torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    layers: list[nn.Module] = []
    for i in range(6):
        layers += [nn.Linear(20 if i == 0 else 32, 32), nn.Sigmoid()]
    return nn.Sequential(*layers, nn.Linear(32, 3))


def task(n: int, generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes: how many of the first two inputs are positive."""
    inputs = torch.randn(n, 20, generator=generator)
    return inputs, (inputs[:, 0] > 0).long() + (inputs[:, 1] > 0).long()


def make_batch(batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    return task(batch_size)


def train(steps: int) -> gradscope.Watcher:
    """Train under DDP in an initialised process group; returns the (detached) watcher."""
    rank, world = dist.get_rank(), dist.get_world_size()
    model = DistributedDataParallel(build_model())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = torch.Generator().manual_seed(1)  # every rank draws the same global batches
    inputs, targets = task(512, data)
    share = GLOBAL_BATCH // world

    with gradscope.watch(model, optimizer=optimizer) as run:  # on every rank, with the same options
        for _ in range(steps):
            batch = torch.randint(0, len(inputs), (GLOBAL_BATCH,), generator=data)
            mine = batch[rank * share : (rank + 1) * share]  # this rank's part of the global batch
            loss = nn.functional.cross_entropy(model(inputs[mine]), targets[mine])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            global_loss = loss.detach().clone()
            dist.all_reduce(global_loss)  # the loss of the global batch, for the record
            run.log(loss=global_loss.item() / world)
    return run


def write_outputs(run: gradscope.Watcher, out: str) -> Optional[str]:
    """On rank 0: save the record and return the report text. Elsewhere: nothing, no file."""
    if not run.is_main_process:
        return None
    record = run.record
    record.save(out)
    return render_text(record, gradscope.diagnose(record))


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="run.json", help="where rank 0 writes the run record (JSON)")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args(argv)
    if "RANK" not in os.environ:
        parser.error("start this sample with torchrun, e.g. `torchrun --nproc_per_node 2 samples/ddp_train.py`")
    torch.set_num_threads(1)  # two processes share the cores
    dist.init_process_group("gloo")
    try:
        report = write_outputs(train(args.steps), args.out)
        if report is not None:
            print(report)
            print(f"\nrank 0 wrote {args.out}")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
