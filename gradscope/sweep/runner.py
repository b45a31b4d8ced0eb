"""Training one sweep configuration under gradscope.watch, and running many of them.

Each configuration is independent: it seeds torch with the sweep seed, builds its network,
trains it full-batch with SGD (momentum 0.9) while gradscope records every step, and
evaluates it. Several configurations run in separate processes (spawned fresh, one torch
thread each) because the networks are too small for torch's own threads to keep 2+ cores busy.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Optional

import torch
from torch import nn

from ..capture import watch
from ..record import RunRecord
from .config import MOMENTUM, SweepConfig
from .data import SweepData
from .networks import build_network, hidden_layer_names, hidden_linear_names
from .summary import ConfigSummary, summarize

# progress(done, total, summary of the configuration just finished; None for the first call, done=0)
Progress = Callable[[int, int, Optional[ConfigSummary]], None]
Outcome = tuple[ConfigSummary, Optional[RunRecord]]


def run_config(config: SweepConfig, data: SweepData) -> Outcome:
    """Train one configuration; a failure (NaN loss, an exception) is reported in the summary."""
    started = time.perf_counter()
    X, y = torch.from_numpy(data.X), torch.from_numpy(data.y)
    X_val, y_val = torch.from_numpy(data.X_val), torch.from_numpy(data.y_val)
    torch.manual_seed(config.seed)
    model = build_network(
        data.num_features, data.num_classes, config.activation, config.depth, config.width,
        config.norm, config.dropout, config.init,
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=MOMENTUM)
    loss_fn = nn.CrossEntropyLoss()
    error: Optional[str] = None
    steps_done = 0
    run = watch(model, optimizer=optimizer)
    try:
        with run:
            for step in range(config.steps):
                model.train()
                logits = model(X)
                loss = loss_fn(logits, y)
                if not torch.isfinite(loss):
                    error = f"the training loss became {loss.item()} at step {step}; training stopped there"
                    break
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                steps_done += 1
                val_loss, val_accuracy = _evaluate(model, loss_fn, X_val, y_val)
                run.log(
                    loss=loss.item(),
                    accuracy=_accuracy(logits, y),
                    val_loss=val_loss,
                    val_accuracy=val_accuracy,
                )
    except Exception as exc:  # noqa: BLE001 - one broken configuration must not end the sweep
        error = f"{type(exc).__name__}: {exc}"
    record = run.record  # what was recorded up to a failure is kept
    metrics = _final_metrics(model, loss_fn, X, y, X_val, y_val) if steps_done else {}
    metrics["chance_loss"] = data.chance_loss
    record.meta.options["sweep"] = config.to_dict()
    summary = summarize(
        config, record, hidden_layer_names(model), hidden_linear_names(model), metrics,
        steps_done, time.perf_counter() - started, error,
    )
    return summary, record


# Starting a worker process costs about a second (it imports torch). Below this much work
# (hidden layers x steps, summed over the configurations) one process finishes first.
PARALLEL_MIN_LAYER_STEPS = 3000


def run_configs(
    configs: list[SweepConfig],
    data: SweepData,
    workers: Optional[int] = None,
    progress: Optional[Progress] = None,
) -> list[Outcome]:
    """Run every configuration, in parallel processes when workers > 1; results in input order."""
    workers = default_workers(configs) if workers is None else min(workers, len(configs))
    if progress is not None:
        progress(0, len(configs), None)  # lets a progress bar appear before the first result
    if workers <= 1:
        return _run_sequential(configs, data, progress)
    return _run_parallel(configs, data, workers, progress)


def default_workers(configs: list[SweepConfig]) -> int:
    """One process per available core when the sweep is big enough to repay starting them, else 1."""
    if len(configs) <= 1 or sum(c.depth * c.steps for c in configs) < PARALLEL_MIN_LAYER_STEPS:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(len(configs), cores))


def _run_sequential(configs: list[SweepConfig], data: SweepData, progress: Optional[Progress]) -> list[Outcome]:
    outcomes = []
    # The sweep seeds torch per configuration; the caller's random state is restored afterwards.
    with torch.random.fork_rng(devices=[]):
        for index, config in enumerate(configs):
            outcomes.append(run_config(config, data))
            if progress is not None:
                progress(index + 1, len(configs), outcomes[-1][0])
    return outcomes


def _run_parallel(
    configs: list[SweepConfig], data: SweepData, workers: int, progress: Optional[Progress]
) -> list[Outcome]:
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    outcomes: list[Optional[Outcome]] = [None] * len(configs)
    # Deepest first: the slowest jobs start early and the short ones fill the gaps at the end.
    order = sorted(range(len(configs)), key=lambda i: -configs[i].depth * configs[i].steps)
    done_count = 0

    def finish(index: int, outcome: Outcome) -> None:
        nonlocal done_count
        outcomes[index] = outcome
        done_count += 1
        if progress is not None:
            progress(done_count, len(configs), outcome[0])

    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
            pending = {pool.submit(run_config, configs[i], data): i for i in order}
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    finish(pending.pop(future), future.result())
    except BrokenProcessPool:
        # A worker died before it could run anything: typically a script that calls the sweep
        # without an `if __name__ == "__main__":` guard, which new processes re-import. The
        # configurations left over still run, here, one after the other.
        with torch.random.fork_rng(devices=[]):
            for index in order:
                if outcomes[index] is None:
                    finish(index, run_config(configs[index], data))
    return outcomes  # type: ignore[return-value]


def _init_worker() -> None:
    torch.set_num_threads(1)


@torch.no_grad()
def _evaluate(model: nn.Module, loss_fn: nn.Module, X: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Loss and accuracy in eval mode (dropout off, BatchNorm running statistics)."""
    model.eval()
    try:
        logits = model(X)
        return float(loss_fn(logits, y)), _accuracy(logits, y)
    finally:
        model.train()


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == y).float().mean())


def _final_metrics(model, loss_fn, X, y, X_val, y_val) -> dict[str, Optional[float]]:
    train_loss, train_accuracy = _evaluate(model, loss_fn, X, y)
    val_loss, val_accuracy = _evaluate(model, loss_fn, X_val, y_val)
    return {
        "train_loss": train_loss,
        "train_accuracy": train_accuracy,
        "val_loss": val_loss,
        "val_accuracy": val_accuracy,
    }
