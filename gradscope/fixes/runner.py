"""Running fix trials: plan each fix against the base run, train the variants, measure and judge them.

Each trial re-seeds, rebuilds the model from the model file (or `build_model`), applies its
plan through `TrainingChanges` and trains with `gradscope.analyze`'s own loop and settings, so
it differs from the base run only by the fix. Trials are independent; with a model file and
enough work they run in worker processes (spawned fresh, one torch thread each, as the sweeps
do), otherwise one after the other in this process.
"""

from __future__ import annotations

import copy
import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import nn

from ..analyze import AnalyzeConfig, seed_everything, train_model_file
from ..analyze.modelfile import ModelFile, exception_summary, load_model_file
from ..diagnose import diagnose
from ..diagnose.config import Config
from ..diagnose.finding import Diagnosis, Finding
from ..errors import ConfigError, GradscopeError
from ..record import RunRecord
from .catalog import CATALOG, FIX_IDS
from .common import final_loss, first_nonfinite_loss_step, last_val_loss, same_finding
from .fix import Fix
from .overfitting import EarlyStopping
from .plan import FixPlan, NotApplicable, check_applies
from .trial import FixTrial, judge

ModelSource = Union[str, os.PathLike, ModelFile]
# progress(done, total, the trial just finished; None for the first call with done=0)
Progress = Callable[[int, int, Optional[FixTrial]], None]
JobResult = tuple[Optional[RunRecord], Optional[str], float]

# Starting a worker costs a few seconds (it imports torch, and its first steps pay one-off
# costs); for trials shorter than this (the base run's duration) one process finishes first.
PARALLEL_MIN_SECONDS = 5.0
_TRIED_SEVERITIES = ("warning", "error")


def run_fix_trials(
    source: ModelSource,
    config: AnalyzeConfig,
    base: RunRecord,
    diagnosis: Diagnosis,
    thresholds: Config,
    *,
    only: Optional[Sequence[str]] = None,
    workers: Optional[int] = None,
    base_seconds: Optional[float] = None,
    progress: Optional[Progress] = None,
) -> list[FixTrial]:
    """One FixTrial per (finding, fix) pair that answers a warning or error of `diagnosis`, in catalog order."""
    check_fix_ids(only)
    settings = thresholds.section("fixes")
    if not settings["enabled"]:
        return []
    items = _plan_all(source, config, base, diagnosis, thresholds, only)
    jobs = [i for i, item in enumerate(items) if isinstance(item[2], FixPlan) and item[2].retrain]
    trials: list[Optional[FixTrial]] = [None] * len(items)
    done = 0
    if progress is not None:
        progress(0, len(items), None)

    def finish(index: int, result: Optional[JobResult]) -> None:
        nonlocal done
        finding, fix, plan = items[index]
        trials[index] = _trial(finding, fix, plan, result, base, diagnosis, thresholds, settings)
        done += 1
        if progress is not None:
            progress(done, len(items), trials[index])

    for index in range(len(items)):  # not tried / not retrained: ready at once
        if index not in jobs:
            finish(index, None)
    count = _workers(workers, source, len(jobs), base_seconds)
    if count > 1:
        _run_parallel(source, config, items, jobs, count, finish)
    else:
        with torch.random.fork_rng(devices=[]):  # the caller's random state is theirs
            for index in jobs:
                finish(index, run_trial_job(source, config, items[index][2]))
    return [t for t in trials if t is not None]


def check_fix_ids(only: Optional[Sequence[str]]) -> None:
    unknown = [name for name in (only or ()) if name not in FIX_IDS]
    if unknown:
        raise ConfigError(f"fixes: unknown fix id(s) {', '.join(map(repr, unknown))}. Known fixes: {', '.join(FIX_IDS)}.")


def run_trial_job(source: ModelSource, config: AnalyzeConfig, plan: FixPlan) -> JobResult:
    """Seed, rebuild the model, train with the plan's changes. Never raises: a failure is its message."""
    started = time.perf_counter()
    try:
        seed_everything(config.seed)
        model_file = source if isinstance(source, ModelFile) else load_model_file(source)
        record = train_model_file(model_file, config, changes=plan.changes())
    except GradscopeError as exc:
        return None, str(exc), time.perf_counter() - started
    except Exception as exc:  # noqa: BLE001 - one failing trial must not end the others
        return None, exception_summary(exc), time.perf_counter() - started
    record.meta.options["fix_trial"] = {"fix": plan.fix, "finding": plan.finding}
    record.meta.notes.append(f"Fix trial {plan.fix} for {plan.finding}: {plan.description}")
    return record, None, time.perf_counter() - started


def _plan_all(
    source: ModelSource,
    config: AnalyzeConfig,
    base: RunRecord,
    diagnosis: Diagnosis,
    thresholds: Config,
    only: Optional[Sequence[str]],
) -> list[tuple[Finding, Fix, Union[FixPlan, str]]]:
    """(finding, fix, its plan or the reason it does not apply) for every fix to try."""
    wanted = []
    seen = set()
    for finding in diagnosis:
        if finding.severity in _TRIED_SEVERITIES and finding.code in CATALOG and finding.code not in seen:
            seen.add(finding.code)
            wanted.extend((finding, fix) for fix in CATALOG[finding.code][1] if not only or fix.id in only)
    if not wanted:
        return []
    spare = _spare_model(source, config)
    items: list[tuple[Finding, Fix, Union[FixPlan, str]]] = []
    for finding, fix in wanted:
        try:
            plan = fix.plan(base, finding, thresholds, copy.deepcopy(spare))
            check_applies(plan, copy.deepcopy(spare))
        except NotApplicable as exc:
            items.append((finding, fix, str(exc)))
            continue
        items.append((finding, fix, plan))
    return items


def _spare_model(source: ModelSource, config: AnalyzeConfig) -> nn.Module:
    """A freshly built model to inspect and to rehearse the edits on; never trained."""
    with torch.random.fork_rng(devices=[]):
        seed_everything(config.seed)
        model_file = source if isinstance(source, ModelFile) else load_model_file(source)
        return model_file.instantiate()


def _trial(
    finding: Finding,
    fix: Fix,
    plan: Union[FixPlan, str],
    result: Optional[JobResult],
    base: RunRecord,
    diagnosis: Diagnosis,
    thresholds: Config,
    settings: dict[str, Any],
) -> FixTrial:
    metrics = CATALOG[finding.code][0]
    before = _metrics(base, diagnosis, finding, thresholds, settings)
    if isinstance(plan, str):
        return FixTrial(finding.code, fix.id, fix.summary, "", "not tried", plan, metrics.key, before)
    trial = FixTrial(finding.code, fix.id, plan.description, plan.snippet(), "", "", metrics.key, before)
    if not plan.retrain:  # early stopping: the base run's own curve at its best point
        trial.after = {**before, **EarlyStopping.metrics_at_best(base)}
        trial.verdict, trial.reason = judge(metrics, before, trial.after, settings)
        trial.reason = f"read from this run's curve, no retraining; {trial.reason}"
        return trial
    assert result is not None
    record, error, trial.seconds = result
    if record is None:
        trial.verdict, trial.reason = "failed", error or "unknown failure"
        return trial
    trial.record = record
    after_diagnosis = diagnose(record, thresholds)
    trial.after = _metrics(record, after_diagnosis, finding, thresholds, settings)
    trial.verdict, trial.reason = judge(metrics, before, trial.after, settings)
    bad_step = first_nonfinite_loss_step(record)
    if trial.verdict == "failed" and bad_step is not None:
        trial.reason = f"the training loss became non-finite at step {bad_step}"
    return trial


def _metrics(
    record: RunRecord, diagnosis: Diagnosis, finding: Finding, thresholds: Config, settings: dict[str, Any]
) -> dict[str, Any]:
    found = same_finding(diagnosis, finding.code)
    values: dict[str, Any] = dict(CATALOG[finding.code][0].measure(record, finding, thresholds))
    values["final_loss"] = final_loss(record, settings["loss_window"])
    values["val_loss"] = last_val_loss(record)
    values["finding"] = found.severity if found is not None else None
    return values


def _workers(requested: Optional[int], source: ModelSource, jobs: int, base_seconds: Optional[float]) -> int:
    if jobs <= 1 or isinstance(source, ModelFile):  # functions from a notebook cannot be sent to a process
        return 1
    if requested is not None:
        return max(1, min(requested, jobs))
    if base_seconds is None or base_seconds < PARALLEL_MIN_SECONDS:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    # Cores other programs keep busy give nothing to a worker but its start-up cost; this
    # process waits while workers run, so its own share counts as free.
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    free = int(cores - load + 1)
    return max(1, min(jobs, cores, free))


def _run_parallel(
    source: ModelSource,
    config: AnalyzeConfig,
    items: list,
    jobs: list[int],
    workers: int,
    finish: Callable[[int, Optional[JobResult]], None],
) -> None:
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    path = str(Path(source))
    left = list(jobs)
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
            pending = {pool.submit(run_trial_job, path, config, items[i][2]): i for i in jobs}
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    index = pending.pop(future)
                    left.remove(index)
                    finish(index, future.result())
    except BrokenProcessPool:
        # A worker died before it could run anything (e.g. a script without a __main__ guard):
        # the trials left over still run, here, one after the other.
        with torch.random.fork_rng(devices=[]):
            for index in left:
                finish(index, run_trial_job(source, config, items[index][2]))


def _init_worker() -> None:
    torch.set_num_threads(1)
