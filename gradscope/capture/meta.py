"""What a watch writes into its RunRecord besides the hooks' numbers: the run's metadata, the
module table, the notes that say how the numbers were taken, and each recorded step.

Kept apart from the Watcher so that the wiring of hooks reads on its own, and so that there is
one call through which a recorded step's values reach the record (`write_step`). The record is
a `RunRecord` in memory or, with `path=`, a `StoreWriter` streaming into a run store on disk:
both take the same calls (`open_record`, `read_record`, `close_record`).
"""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from typing import Any, Callable, Optional, Union

import torch

from ..errors import GradscopeError
from ..measure import StepValues
from ..model_tree import WatchedModule
from ..record import ModuleInfo, RunMeta, RunRecord
from ..runinfo import BUDGET_NOTE_START, UNSEEN_FORWARD_MARK
from ..store import StoreWriter
from ..version import __version__


def run_meta(model: torch.nn.Module, optimizer: Optional[Any], **options: Any) -> RunMeta:
    """The record's header; `options` are the watch options (include/exclude as given, listed)."""
    for key in ("include", "exclude"):
        patterns = options[key]
        options[key] = patterns if patterns is None or isinstance(patterns, str) else list(patterns)
    params = list(model.parameters())
    return RunMeta(
        model_class=type(model).__name__,
        num_params=sum(p.numel() for p in params),
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        grad_source="optimizer" if optimizer is not None else "backward",
        optimizer=type(optimizer).__name__ if optimizer is not None else None,
        every=options["every"],
        gradscope_version=__version__,
        torch_version=torch.__version__,
        python_version=platform.python_version(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        options=options,
    )


def module_table(
    watched: list[WatchedModule],
    forward_order: dict[str, int],
    forward_unseen: bool,
    functional: list[WatchedModule] = (),  # type: ignore[assignment]
) -> list[ModuleInfo]:
    """The watched modules in forward order; those that never ran come last, in tree order.

    `functional` are activations called as functions (their type reads "F.relu", whichever of
    F.relu, torch.relu or x.relu() the model called); they sit between the layer that feeds them
    and the layer that reads them.
    """
    unseen = len(forward_order)
    entries = list(watched) + list(functional)
    kinds = {id(w): f"F.{w.activation}" for w in functional}
    ranked = sorted(enumerate(entries), key=lambda item: (forward_order.get(item[1].name, unseen + item[0]), item[0]))
    return [
        ModuleInfo(
            name=w.name,
            type=kinds.get(id(w), type(w.module).__name__),
            num_params=sum(p.numel() for _, p in w.params),
            params=[pname for pname, _ in w.params],
            trainable_params=sum(p.numel() for _, p in w.params if p.requires_grad),
            activation=w.activation,
            is_leaf=w.is_leaf,
            executed=w.name in forward_order or forward_unseen,  # unseen forwards: unknown, not unused
        )
        for _, w in ranked
    ]


def open_record(
    header: RunMeta, path: Optional[Union[str, os.PathLike[str]]], refresh: Callable[[], None]
) -> Union[RunRecord, StoreWriter]:
    """Where a watch's steps go: memory, or the run store at `path` (checked, locked and created
    now, so that a bad path fails before training). `refresh` brings the module table and the
    hook errors up to date; the store calls it about once a second, so a killed run has them."""
    return RunRecord(meta=header) if path is None else StoreWriter(path, header, refresh=refresh)


def read_record(record: Union[RunRecord, StoreWriter]) -> RunRecord:
    return RunRecord(**record.read()) if isinstance(record, StoreWriter) else record


def close_record(record: Union[RunRecord, StoreWriter]) -> None:
    if isinstance(record, StoreWriter):
        record.close()


def check_open(record: Union[RunRecord, StoreWriter]) -> None:
    if isinstance(record, StoreWriter) and record.closed:
        raise GradscopeError(
            f"This watch streamed its run into {str(record.path)!r} and was detached; a store holds one run. "
            "Start a new watch to record more (with a new path, or the same one to replace the run)."
        )


def write_step(
    record: Union[RunRecord, StoreWriter],
    watched: list[WatchedModule],
    step: int,
    values: StepValues,
    skipped: bool,
    interval: Optional[int] = None,
) -> None:
    """The one place where a recorded step's values reach the record; `interval`: the recording
    interval a budget had chosen when this step was recorded (None: every=N chose it)."""
    layer_values = {}
    params = [pname for w in watched for pname, _ in w.params]
    for w in watched:
        stats = {**values.activation_stats(w.name), **values.backprop_stats(w.name)}
        if w.params and not skipped:
            stats.update(values.gradient_stats([pname for pname, _ in w.params]))
        layer_values[w.name] = stats
    param_values = {} if skipped else {pname: values.gradient_stats([pname]) for pname in params}
    record.append_step(step, layer_values, param_values, skipped=skipped, measured=True, interval=interval)
    if values.rank_grad_norms and not skipped:
        record.log_scalar(step, "grad_norm_rank_max", max(values.rank_grad_norms))
        record.log_scalar(step, "grad_norm_rank_min", min(values.rank_grad_norms))


# ---- notes ----------------------------------------------------------------------------------------------
def add_notes(record: RunRecord, notes: list[str]) -> None:
    for note in notes:
        if note not in record.meta.notes:
            record.meta.notes.append(note)


def note_budget(record: Union[RunRecord, StoreWriter], chooser: Any) -> None:
    """What budget= chose and why, in the notes (replacing the last refresh's) and the options."""
    cost, between = chooser.cost_in_steps()
    steps, recorded = chooser.steps, chooser.recorded_steps
    mean = steps / recorded if recorded else 0.0
    note = (
        f"{BUDGET_NOTE_START}{chooser.budget * 100:g} %: recorded {recorded} of {steps} steps, every {mean:.1f}th on "
        f"average (the interval was {chooser.min_interval} at step 0 and {chooser.interval} at the end). gradscope's own "
        f"cost was about {cost:.2f} of a plain step when recording and {between:.3f} between recorded steps"
    )
    if between > chooser.budget:
        note += (
            f"; its hooks alone cost more than the budget between recorded steps, so it recorded as rarely as "
            f"allowed (at least every {chooser.max_interval}th step)"
        )
    note += (
        ". Measured on the training thread with time.perf_counter: the time in gradscope's hooks against the time "
        "from one step's end to the next (on a GPU, the CPU time spent queueing its kernels and reading its one copy "
        "per recorded step, which is what slows the loop)."
    )
    notes = record.meta.notes
    notes[:] = [n for n in notes if not n.startswith(BUDGET_NOTE_START)] + [note]
    record.meta.options["budget_interval"] = {
        "first": chooser.min_interval, "last": chooser.interval, "widest": chooser.widest, "mean": round(mean, 2)
    }


NO_OPTIMIZER_NOTE = "Gradients were read after each backward (no optimizer given): update_ratio is unavailable."
_COMPILED_NOTE = (
    "The model ran under torch.compile; gradscope's hooks ran eagerly between compiled pieces "
    "(graph breaks at the watched modules), so every statistic was measured, on the outputs of the "
    "compiled pieces."
)


def void_steps_note(count: int, scaler_known: bool, every_step_recorded: bool = True) -> str:
    """Backward passes through the network that no optimizer step of it followed (noticed only
    while a step is recorded: between recorded steps the gradient hooks are off)."""
    counted = "" if every_step_recorded else " during recorded steps (between them they are not watched)"
    note = (
        f"{count} backward pass(es){counted} reached this network's parameters, and their gradients were discarded "
        "without an optimizer step: they are not steps, and nothing measured in them is recorded (another "
        "network's loss flowing through this one, as in a GAN"
    )
    if scaler_known:
        return note + ")."
    return note + ", or steps a GradScaler skipped: pass scaler= to watch() to record those as skipped)."


def unseen_forward_note(fullgraph: bool) -> str:
    """Why a training step's forward ran without hooks, and what that leaves out."""
    missing = f"{UNSEEN_FORWARD_MARK}; gradient, weight and update "
    missing += "statistics are exact (they are read at the optimizer step, outside the compiled graph)."
    if fullgraph:
        return (
            "gradscope: the model ran under torch.compile(fullgraph=True); gradscope's forward hooks would "
            f"break the single graph, so they were disabled: {missing} Compile without fullgraph=True "
            "(the hooks then run between graph pieces) to get them."
        )
    return (
        "gradscope saw training steps but no forward hook ran: the model most likely runs code compiled "
        "before gradscope attached (torch.compile does not see hooks added after its first call), so "
        f"{missing} Attach gradscope before the first call of the compiled model to get them."
    )


def scale_out_notes(
    world: int, rank: int, ranks: Any, forward_unseen: bool, compile_traced: bool, fullgraph: bool
) -> list[str]:
    """Notes on ranks and torch.compile: how the statistics relate to what the model computed."""
    notes = []
    if ranks is not None:
        notes.append(
            f"Trained by {world} ranks ({'FSDP2 shards' if ranks.sharded else 'DDP'}); statistics "
            "are those of the global batch: activation sums and counts over all ranks (a unit is dead only if "
            "dead on every rank; act_calls per rank, act_batch the global batch), gradients as the optimizer "
            "used them (all-reduced, or the shards combined), backprop_norm of the rank-averaged loss."
        )
        if not ranks.is_main:
            notes.append(f"This is rank {rank} of {world}: only rank 0 keeps the statistics.")
    elif world > 1:
        notes.append(
            f"torch.distributed runs {world} processes, but the watched model is neither DDP-wrapped nor "
            "FSDP2-sharded: the statistics are this rank's only. Wrap the model before watching it, or pass "
            "process_group= to combine the ranks."
        )
    if forward_unseen:
        notes.append(unseen_forward_note(fullgraph))
    elif compile_traced:
        notes.append(_COMPILED_NOTE)
    return notes

