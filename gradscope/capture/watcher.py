"""Attaching hooks to a user's model and optimizer, and removing every one of them again.

Which hooks, and why (verified on torch 2.13):
- Module *forward* hooks, never module backward hooks: `register_full_backward_hook` raises on
  in-place ops (`nn.ReLU(inplace=True)`, `out += identity`) and never fires for dict/list
  outputs. Activation statistics are reduced inside the forward hook, because a following
  in-place op would overwrite a stored reference.
- A *tensor* hook on each floating output that requires grad gives dL/d(output), the backprop
  signal the chain rule multiplies layer by layer.
- *Optimizer* step pre/post hooks read gradients when the optimizer uses them: after gradient
  accumulation, clipping and `GradScaler.unscale_`, and give the update Δw of the step.
- *Post-accumulate-grad* hooks on parameters only notice that a backward happened: the end of
  a step when there is no optimizer, and steps that GradScaler skipped.

Hooks never raise into the user's training (errors are counted in the record) and never
touch the user's tensors beyond reading them, so a watched run computes bitwise the same
losses as an unwatched one.

Several processes (DDP, FSDP2): see `gradscope.distributed`; every rank watches, one
collective per recorded step combines the ranks, only rank 0 keeps the statistics.

torch.compile: a hook that Dynamo traces runs eagerly in a graph break when the compile
allows graph breaks (statistics as in eager mode); under `fullgraph=True` it does nothing,
so the compiled graph stays whole, and the record says which statistics are missing.
"""

from __future__ import annotations

import platform
import warnings
import weakref
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Optional

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from ..distributed import combiner_for, is_sharded, local_tensor, process_rank
from ..errors import GradscopeError
from ..measure import PARAMETER_SAMPLE, SAMPLING_NOTE, StepAccumulator, StepValues, sample
from ..model_tree import WatchedModule, saturation_counter, select_modules, unwrap
from ..record import HookError, ModuleInfo, RunMeta, RunRecord
from ..statdefs import NONNEGATIVE, RELU_FAMILY
from ..version import __version__


def _inert_hook(*args: Any, **kwargs: Any) -> None:
    return None


def _inert_hook_factory() -> Callable[..., None]:
    return _inert_hook


class _CompileState:
    """What the hooks noticed of torch.compile (attributes set inside traced code are replayed
    by Dynamo on every call of the compiled graph)."""

    def __init__(self) -> None:
        self.traced = False  # a hook was traced by Dynamo
        self.fullgraph = False  # ... inside a graph that must not break: it did nothing


def _graph_breaks_allowed() -> bool:
    """Evaluated once while Dynamo traces a hook (a constant of the trace): may the graph break?"""
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        tx = InstructionTranslator.current_tx()
        return not (getattr(tx, "one_graph", False) or getattr(tx, "error_on_graph_break", False))
    except Exception:  # noqa: BLE001 - unknown Dynamo internals: keep the graph whole
        return False


# Set by hand rather than with torch._dynamo.assume_constant_result: importing Dynamo costs seconds.
_graph_breaks_allowed._dynamo_marked_constant = True  # type: ignore[attr-defined]


def _call(fn: Callable[..., Any], args: tuple) -> Any:
    return fn(*args)


_call_eagerly = torch._disable_dynamo(_call)  # a graph break: the hook body runs as plain Python


class _Hook:
    """A callable registered on the user's objects.

    Copies of the model carry an inert stand-in: a `copy.deepcopy` (EMA models) never writes
    into this run's statistics, and `torch.save(model)` while watched pickles a no-op.
    """

    __slots__ = ("fn", "compile_state")

    def __init__(self, fn: Callable[..., Any], compile_state: Optional[_CompileState] = None) -> None:
        self.fn = fn
        self.compile_state = compile_state

    def __call__(self, *args: Any) -> Any:
        if torch.compiler.is_compiling():  # Dynamo is tracing this call (a compiled forward)
            state = self.compile_state
            if _graph_breaks_allowed():
                if state is not None:
                    state.traced = True
                return _call_eagerly(self.fn, args)
            if state is not None:
                state.traced = True
                state.fullgraph = True
            return None
        return self.fn(*args)

    def __deepcopy__(self, memo: dict) -> Callable[..., None]:
        return _inert_hook

    def __reduce__(self) -> tuple:
        return (_inert_hook_factory, ())


def _in_backward() -> bool:
    return torch._C._current_graph_task_id() != -1


def _first_floating_tensor(output: Any) -> Optional[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return output if output.is_floating_point() else None
    for leaf in tree_leaves(output):
        if isinstance(leaf, torch.Tensor) and leaf.is_floating_point():
            return leaf
    return None


class Watcher:
    """Records per-layer statistics of a model while the user's own loop trains it.

    Use it as a context manager (`with gradscope.watch(model, optimizer=opt) as run:`) or call
    `attach()` and `detach()` yourself; `detach()` (also on exceptions) removes every hook.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optional[torch.optim.Optimizer] = None,
        *,
        every: int = 1,
        include: Optional[str | Iterable[str]] = None,
        exclude: Optional[str | Iterable[str]] = None,
        activations: bool = True,
        gradients: bool = True,
        update_ratio: bool = True,
        process_group: Any = None,
        scaler: Optional[Any] = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise GradscopeError(f"gradscope.watch needs a torch.nn.Module, got {type(model).__name__}.")
        if not isinstance(every, int) or every < 1:
            raise GradscopeError(f"every must be a positive integer (record every Nth step), got {every!r}.")
        self.model = unwrap(model)
        self.optimizer = optimizer
        self.every = every
        self.activations = activations
        self.gradients = gradients
        self.update_ratio = update_ratio and optimizer is not None
        # With a GradScaler the backward runs on the scaled loss: dL/d(output) is multiplied by
        # the scale. Parameter gradients are read after unscale_; the backprop signal is divided
        # by the scale of its step here (without the scaler it stays scaled, and the record says so).
        self.scaler = scaler if scaler is not None and scaler.is_enabled() else None
        self._watched = select_modules(self.model, include, exclude)
        self._params = [(pname, p) for w in self._watched for pname, p in w.params]
        self._rank, self._world = process_rank(process_group)
        # Several ranks training one model (DDP, FSDP2): combined once per recorded step.
        self._ranks = combiner_for(model, self._params, process_group)
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self._sharded = distributed and any(is_sharded(p) for _, p in self._params)  # FSDP2
        self._compile_state = _CompileState()
        self._forward_unseen = False  # steps ended without any forward hook having run
        self._attached_at_step = 0
        # DDP: each rank's gradient norm before averaging, a sign of unevenly split data
        self._rank_spread = self._ranks is not None and not self._ranks.sharded and gradients and optimizer is not None
        self._local_norms: dict[int, torch.Tensor] = {}
        self._record = RunRecord(meta=self._make_meta(include, exclude))
        self._handles: list[Any] = []
        self._tensor_handles: list[Any] = []
        self._attached = False
        self._hook_errors: dict[tuple[str, str], HookError] = {}
        self._forward_order: dict[str, int] = {}
        self._reset_window()
        self._step = 0

    # ---- public API -----------------------------------------------------------------------
    def attach(self) -> "Watcher":
        if self._attached:
            raise GradscopeError("This Watcher is already attached; call detach() first.")
        self._attached_at_step = self._step
        try:
            self._register_hooks()
        except BaseException:
            self._remove_hooks()
            raise
        self._attached = True
        return self

    def detach(self) -> RunRecord:
        """Remove every hook; the model is left exactly as it was. Returns the record."""
        try:
            if self._attached and self.optimizer is not None and self._backward_since_step:
                self._maybe_end_skipped_step()
        finally:
            self._remove_hooks()
            self._attached = False
            self._before_step = None
            self._accumulator = StepAccumulator()
            self._refresh_record()
        return self._record

    def __enter__(self) -> "Watcher":
        if not self._attached:
            self.attach()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.detach()

    @property
    def record(self) -> RunRecord:
        """The run so far (complete once detached)."""
        self._refresh_record()
        return self._record

    @property
    def is_main_process(self) -> bool:
        """True on rank 0 (or without torch.distributed): the process that keeps the statistics
        and should write records and reports. Other ranks' records hold no steps."""
        return self._rank == 0

    def save(self, path: Any) -> Optional[Any]:
        """Save the record as JSON on the main process only; returns the path there, None elsewhere."""
        if not self.is_main_process:
            return None
        return self.record.save(path)

    @property
    def step(self) -> int:
        """Number of training steps seen so far (optimizer steps, skipped ones included)."""
        return self._step

    def log(self, **scalars: float) -> None:
        """Log named scalars (loss=..., val_loss=...) for the current step.

        A value logged after a training forward but before `optimizer.step()` belongs to the
        step in progress; one logged after the step (the usual place) to the step just taken.
        """
        if not self._keeps_statistics:
            return
        step = self._step if (self._forward_since_step or self._step == 0) else self._step - 1
        for name, value in scalars.items():
            if isinstance(value, torch.Tensor):
                value = value.detach().float().item()
            self._record.log_scalar(step, name, float(value))

    # ---- hooks: registration ------------------------------------------------------------------
    def _register_hooks(self) -> None:
        state = self._compile_state
        self._handles.append(
            self.model.register_forward_pre_hook(_Hook(self._guarded("forward", self._on_root_forward), state))
        )
        for w in self._watched:
            if w.watch_output and (self.activations or self.gradients):
                hook = _Hook(self._guarded(f"forward:{w.name}", self._forward_hook_for(w)), state)
                self._handles.append(w.module.register_forward_hook(hook))
        for pname, param in self._params:
            if param.requires_grad:
                hook = _Hook(self._guarded(f"grad:{pname}", self._on_param_accumulated))
                self._handles.append(param.register_post_accumulate_grad_hook(hook))
        if self.optimizer is not None:
            self._handles.append(
                self.optimizer.register_step_pre_hook(_Hook(self._guarded("optimizer-step", self._on_optimizer_pre_step)))
            )
            self._handles.append(
                self.optimizer.register_step_post_hook(_Hook(self._guarded("optimizer-step", self._on_optimizer_post_step)))
            )

    def _remove_hooks(self) -> None:
        for handle in self._handles + self._tensor_handles:
            handle.remove()
        self._handles.clear()
        self._tensor_handles.clear()

    def _guarded(self, where: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Run a hook body; an exception in gradscope's own code is recorded, never raised."""

        def run(*args: Any) -> None:
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001 - observation must never break training
                key = (where, f"{type(exc).__name__}: {exc}")
                if key in self._hook_errors:
                    self._hook_errors[key].count += 1
                else:
                    self._hook_errors[key] = HookError(where=where, error=key[1], first_step=self._step)
            return None

        return run

    # ---- hooks: forward -------------------------------------------------------------------------
    def _on_root_forward(self, module: nn.Module, args: Any) -> None:
        training = torch.is_grad_enabled() and module.training and not _in_backward()
        if training and self.optimizer is not None and self._backward_since_step:
            self._maybe_end_skipped_step()
        self._forward_seen = True
        if not training:
            return
        self._forward_since_step = True
        self._last_layout = None

    def _forward_hook_for(self, w: WatchedModule) -> Callable[[nn.Module, Any, Any], None]:
        module_ref = weakref.ref(w.module)
        count_saturated = saturation_counter(w.module, w.activation)
        nonnegative = w.activation in NONNEGATIVE
        # Units can only die where zero is a large part of the output range (ReLU and friends);
        # a Linear or Conv output is 0 for every sample only when its weights are.
        tracks_dead_units = w.activation in RELU_FAMILY or w.activation in NONNEGATIVE
        # Made once per module, not per call: the same hook goes on every output of this module.
        backprop_hook = _Hook(self._guarded(f"backprop:{w.name}", lambda grad: self._on_output_grad(w.name, grad)))

        def on_forward(module: nn.Module, args: Any, output: Any) -> None:
            if module is not module_ref() or not torch.is_grad_enabled():
                return
            if _in_backward() and w.name in self._forwarded_this_step:
                return  # non-reentrant activation checkpointing recomputes a forward already seen
            recorded = self._is_recorded(self._step)
            if not module.training:
                if recorded:
                    self._accumulator.add_eval_call(w.name)
                return
            self._forwarded_this_step.add(w.name)
            self._forward_order.setdefault(w.name, len(self._forward_order))
            out = _first_floating_tensor(output)
            if out is None:
                return
            layout = w.layout or self._last_layout
            if w.layout is not None:
                self._last_layout = w.layout
            unit_dim = (1 if layout == "first" else out.dim() - 1) if out.dim() >= 2 else None
            if not recorded:
                # Between recorded steps (every=N) only unit activity is watched, for act_dead_frac.
                if self.activations and tracks_dead_units and unit_dim is not None:
                    self._accumulator.add_unit_activity(w.name, out, unit_dim, nonnegative)
                return
            if self.activations:
                self._accumulator.add_activation(
                    w.name, out, unit_dim if tracks_dead_units else None, count_saturated, nonnegative
                )
            if self.gradients and out.requires_grad:
                self._tensor_handles.append(out.register_hook(backprop_hook))

        return on_forward

    # ---- hooks: backward --------------------------------------------------------------------------
    def _on_output_grad(self, name: str, grad: torch.Tensor) -> None:
        self._accumulator.add_backprop(name, grad)
        self._queue_backward_end()

    def _on_param_accumulated(self, param: nn.Parameter) -> None:
        self._backward_since_step = True
        grad = param.grad
        if grad is not None:
            self._sentinel = (weakref.ref(param), id(grad), grad._version)
            if self._rank_spread and self._is_recorded(self._step):
                # DDP's own hook on this gradient runs after this one: still this rank's gradient.
                self._local_norms[id(param)] = torch.linalg.vector_norm(grad.detach(), dtype=torch.float32)
        self._queue_backward_end()

    def _queue_backward_end(self) -> None:
        if self.optimizer is None and not self._backward_end_queued:
            self._backward_end_queued = True
            torch.autograd.Variable._execution_engine.queue_callback(
                self._guarded("backward-end", self._on_backward_end)
            )

    def _on_backward_end(self) -> None:
        if self._ranks is not None and not self._backward_end_requeued:
            # DDP/FSDP finish their gradient reduction in a callback queued after ours: go last.
            self._backward_end_requeued = True
            torch.autograd.Variable._execution_engine.queue_callback(
                self._guarded("backward-end", self._on_backward_end)
            )
            return
        self._backward_end_queued = False
        self._backward_end_requeued = False
        if self._is_recorded(self._step) and self.gradients:
            self._accumulator.add_gradients(*self._current_gradients())
        self._end_step(skipped=False)

    # ---- hooks: optimizer -----------------------------------------------------------------------
    def _on_optimizer_pre_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if not self._is_recorded(self._step) or not self.gradients:
            return
        named, weights = self._current_gradients()
        self._accumulator.add_gradients(named, weights)
        if self._local_norms:
            self._accumulator.add_local_gradient_norm(list(self._local_norms.values()))
            self._local_norms = {}
        if self.update_ratio and named:
            # A copy of (a sample of) the weights, so the post-step hook can measure the update.
            samples = [sample(w.detach(), PARAMETER_SAMPLE) for w in weights]
            self._before_step = ([n for n, _ in named], samples, [s.clone() for s in samples])

    def _on_optimizer_post_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        try:
            if self._before_step is not None:
                names, after, before = self._before_step  # `after`: views of the weights, updated in place
                self._before_step = None
                torch._foreach_sub_(before, after)
                self._accumulator.add_updates(names, before)
        finally:
            self._end_step(skipped=False)  # always: under DDP/FSDP the other ranks wait for this step

    def _current_gradients(self) -> tuple[list[tuple[str, torch.Tensor]], list[torch.Tensor]]:
        named, weights = [], []
        for pname, param in self._params:
            if param.grad is not None:
                if self._sharded:  # FSDP2: this rank's shard; the ranks are combined at the flush
                    named.append((pname, local_tensor(param.grad)))
                    weights.append(local_tensor(param))
                else:
                    named.append((pname, param.grad))
                    weights.append(param)
        return named, weights

    # ---- steps --------------------------------------------------------------------------------------
    def _is_recorded(self, step: int) -> bool:
        return step % self.every == 0

    def _maybe_end_skipped_step(self) -> None:
        """A backward happened, no optimizer step followed, and the gradients were consumed
        (unscaled in place or zeroed): GradScaler skipped the step for non-finite gradients."""
        if self._sentinel is None:
            return
        param_ref, grad_id, version = self._sentinel
        param = param_ref()
        grad = param.grad if param is not None else None
        if grad is None or id(grad) != grad_id or grad._version != version:
            self._end_step(skipped=True)

    def _queue_loss_scale(self, skipped: bool) -> None:
        scale = getattr(self.scaler, "_scale", None)
        if scale is None:
            return
        # A skipped step was noticed after scaler.update() had already backed the scale off.
        used = scale / self.scaler.get_backoff_factor() if skipped else scale
        self._accumulator.queue("loss_scale", "", used.detach().reshape(()).float())

    def _end_step(self, skipped: bool) -> None:
        step = self._step
        self._step += 1
        if not skipped and self._backward_since_step and not self._forward_seen:
            # The first step may have run its forward before attach(); later ones may not.
            if self._compile_state.fullgraph or step > self._attached_at_step:
                self._note_unseen_forward()
        try:
            if self._is_recorded(step):
                self._queue_loss_scale(skipped)
                accumulator, self._accumulator = self._accumulator, StepAccumulator()
                values = accumulator.flush(self._ranks)
                if self._keeps_statistics:
                    self._append(step, values, skipped)
            else:
                self._accumulator.end_unrecorded_step()
        finally:
            self._tensor_handles.clear()  # their tensors are gone with the step
            self._forwarded_this_step = set()
            self._backward_since_step = False
            self._forward_since_step = False
            self._forward_seen = False
            self._sentinel = None
            self._local_norms = {}

    @property
    def _keeps_statistics(self) -> bool:
        # Ranks combined by one collective all know the step's statistics; rank 0 keeps them.
        return self._ranks is None or self._ranks.is_main

    def _note_unseen_forward(self) -> None:
        """A training step whose forward no hook saw: compiled code that runs without them."""
        if self._forward_unseen:
            return
        self._forward_unseen = True
        warnings.warn(self._unseen_forward_note(), RuntimeWarning, stacklevel=2)

    def _unseen_forward_note(self) -> str:
        missing = "activation statistics (act_*) and backprop_norm are not recorded; gradient, weight and update "
        missing += "statistics are exact (they are read at the optimizer step, outside the compiled graph)."
        if self._compile_state.fullgraph:
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

    def _append(self, step: int, values: StepValues, skipped: bool) -> None:
        layer_values = {}
        for w in self._watched:
            stats = {**values.activation_stats(w.name), **values.backprop_stats(w.name)}
            if w.params and not skipped:
                stats.update(values.gradient_stats([pname for pname, _ in w.params]))
            layer_values[w.name] = stats
        param_values = {} if skipped else {pname: values.gradient_stats([pname]) for pname, _ in self._params}
        self._record.append_step(step, layer_values, param_values, skipped=skipped)
        if values.rank_grad_norms and not skipped:
            self._record.log_scalar(step, "grad_norm_rank_max", max(values.rank_grad_norms))
            self._record.log_scalar(step, "grad_norm_rank_min", min(values.rank_grad_norms))

    def _reset_window(self) -> None:
        self._accumulator = StepAccumulator()
        self._forwarded_this_step: set[str] = set()
        self._backward_since_step = False
        self._forward_since_step = False
        self._backward_end_queued = False
        self._sentinel: Optional[tuple[Any, int, int]] = None
        self._before_step: Optional[tuple[list[str], list[torch.Tensor], list[torch.Tensor]]] = None
        self._last_layout: Optional[str] = None
        self._forward_seen = False  # any call of the model's forward, training or not
        self._backward_end_requeued = False

    # ---- the record -----------------------------------------------------------------------------------
    def _make_meta(self, include: Any, exclude: Any) -> RunMeta:
        params = list(self.model.parameters())
        return RunMeta(
            model_class=type(self.model).__name__,
            num_params=sum(p.numel() for p in params),
            trainable_params=sum(p.numel() for p in params if p.requires_grad),
            grad_source="optimizer" if self.optimizer is not None else "backward",
            optimizer=type(self.optimizer).__name__ if self.optimizer is not None else None,
            every=self.every,
            gradscope_version=__version__,
            torch_version=torch.__version__,
            python_version=platform.python_version(),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            options={
                "every": self.every,
                "include": include if include is None or isinstance(include, str) else list(include),
                "exclude": exclude if exclude is None or isinstance(exclude, str) else list(exclude),
                "activations": self.activations,
                "gradients": self.gradients,
                "update_ratio": self.update_ratio,
                "scaler": self.scaler is not None,
                "world_size": self._world,
            },
        )

    def _refresh_record(self) -> None:
        order = self._forward_order
        unseen = len(order)
        ranked = sorted(
            enumerate(self._watched),
            key=lambda item: (order.get(item[1].name, unseen + item[0]), item[0]),
        )
        self._record.modules = [
            ModuleInfo(
                name=w.name,
                type=type(w.module).__name__,
                num_params=sum(p.numel() for _, p in w.params),
                params=[pname for pname, _ in w.params],
                trainable_params=sum(p.numel() for _, p in w.params if p.requires_grad),
                activation=w.activation,
                is_leaf=w.is_leaf,
                executed=w.name in order or self._forward_unseen,  # unseen forwards: unknown, not unused
            )
            for _, w in ranked
        ]
        self._record.hook_errors = list(self._hook_errors.values())
        if self._record.skipped_steps and self.scaler is None:
            note = (
                "GradScaler skipped steps, but watch() was not given scaler=: backprop_norm is of the scaled loss "
                "(its ratios along depth are right, its absolute values are multiplied by the loss scale)."
            )
            if note not in self._record.meta.notes:
                self._record.meta.notes.append(note)
        if SAMPLING_NOTE not in self._record.meta.notes:
            self._record.meta.notes.append(SAMPLING_NOTE)
        notes = []
        if self.optimizer is None:
            notes.append("Gradients were read after each backward (no optimizer given): update_ratio is unavailable.")
        notes += self._scale_out_notes()
        for note in notes:
            if note not in self._record.meta.notes:
                self._record.meta.notes.append(note)

    def _scale_out_notes(self) -> list[str]:
        notes = []
        if self._ranks is not None:
            notes.append(
                f"Trained by {self._world} ranks ({'FSDP2 shards' if self._ranks.sharded else 'DDP'}); statistics "
                "are those of the global batch: activation sums and counts over all ranks (a unit is dead only if "
                "dead on every rank; act_calls per rank, act_batch the global batch), gradients as the optimizer "
                "used them (all-reduced, or the shards combined), backprop_norm of the rank-averaged loss."
            )
            if not self._ranks.is_main:
                notes.append(f"This is rank {self._rank} of {self._world}: only rank 0 keeps the statistics.")
        elif self._world > 1:
            notes.append(
                f"torch.distributed runs {self._world} processes, but the watched model is neither DDP-wrapped nor "
                "FSDP2-sharded: the statistics are this rank's only. Wrap the model before watching it, or pass "
                "process_group= to combine the ranks."
            )
        if self._forward_unseen:
            notes.append(self._unseen_forward_note())
        elif self._compile_state.traced:
            notes.append(
                "The model ran under torch.compile; gradscope's hooks ran eagerly between compiled pieces "
                "(graph breaks at the watched modules), so every statistic was measured, on the outputs of the "
                "compiled pieces."
            )
        return notes


def watch(model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None, **options: Any) -> Watcher:
    """A Watcher for `model`; use it in a `with` block, which attaches and detaches it.

    Options: every=N (record every Nth step), include=/exclude= (regexes on module names),
    activations=True, gradients=True, update_ratio=True, process_group=None (the ranks that
    train the model together; by default all ranks when the model is DDP-wrapped or FSDP2-sharded).

    Under torch.distributed every rank must watch the model (with the same options); only the
    main process (`run.is_main_process`, rank 0) keeps statistics: save and report there.
    """
    return Watcher(model, optimizer, **options)


__all__ = ["Watcher", "watch"]
