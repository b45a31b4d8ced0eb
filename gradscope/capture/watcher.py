"""Watching a model while the user's own loop trains it.

The Watcher only connects things: it registers the hooks (`hooks.py`: the wrapper that never
raises into training, and torch's private calls), tells the step clock what happened
(`clock.py`: where steps begin and end, which are recorded), hands tensors to the accumulator
(`gradscope.measure`), and owns every handle, so `detach()` leaves the model as it was.
`meta.py` writes the record's header, module table and notes, into memory or, with `path=`,
into a run store on disk (`gradscope.store`); `pending.py` holds a GPU's recorded steps until
their copy has landed.

Several processes (DDP, FSDP2): see `gradscope.distributed`; every rank watches, one
collective per recorded step combines the ranks, only rank 0 keeps the statistics.
"""

from __future__ import annotations

import os
import warnings
import weakref
from time import perf_counter
from typing import Any, Callable, Iterable, Optional

import torch
from torch import nn

from ..distributed import combiner_for, is_sharded, process_rank
from ..errors import GradscopeError
from ..measure import SAMPLING_NOTE, StepAccumulator
from ..model_tree import WatchedModule, is_weight_layer, select_modules, unwrap
from ..record import RunRecord
from . import meta
from .clock import StepClock, StepEnd, check_budget
from .hooks import (
    BackwardEnd,
    CompileState,
    GradientSentinel,
    Hook,
    HookErrors,
    HookTimer,
    ScalerSkips,
    first_floating_tensor,
    in_backward,
    register_gradient_hook,
    register_step_hooks,
    unwrap_optimizer,
)
from .pending import PendingSteps
from .probes import AsyncFlags, OutputProbe, UpdateProbe, current_gradients, functional_activation

# The key of the model's functional output activation among `Watcher._functional` (keyed by the reading
# layer's name otherwise): no module name contains a NUL.
_OUTPUT = "\x00output"


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
        budget: Optional[float] = None,
        include: Optional[str | Iterable[str]] = None,
        exclude: Optional[str | Iterable[str]] = None,
        activations: bool = True,
        gradients: bool = True,
        update_ratio: bool = True,
        process_group: Any = None,
        scaler: Optional[Any] = None,
        path: Optional[str | os.PathLike[str]] = None,
        functional_activations: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise GradscopeError(f"gradscope.watch needs a torch.nn.Module, got {type(model).__name__}.")
        if not isinstance(every, int) or every < 1:
            raise GradscopeError(f"every must be a positive integer (record every Nth step), got {every!r}.")
        check_budget(budget)
        self.model = unwrap(model)
        if optimizer is not None:  # the torch optimizer inside accelerate's, Lightning's, DeepSpeed's wrappers
            optimizer, carried_scaler = unwrap_optimizer(optimizer)
            scaler = scaler if scaler is not None else carried_scaler
        self.optimizer = optimizer
        self.every = every
        self.activations = activations
        self.gradients = gradients
        self.update_ratio = update_ratio and optimizer is not None
        self.functional_activations = functional_activations and activations
        # With a GradScaler the backward runs on the scaled loss: dL/d(output) is multiplied by
        # the scale. Parameter gradients are read after unscale_; the backprop signal is divided
        # by the scale of its step here, and a step the scaler skipped is recorded as skipped.
        self.scaler = scaler if scaler is not None and scaler.is_enabled() else None
        self._watched = select_modules(self.model, include, exclude)
        self._params = [(pname, p) for w in self._watched for pname, p in w.params]
        self._rank, self._world = process_rank(process_group)
        self._ranks = combiner_for(model, self._params, process_group)  # DDP, FSDP2: combined once a step
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self._sharded = distributed and any(is_sharded(p) for _, p in self._params)  # FSDP2
        # DDP: each rank's gradient norm before averaging, a sign of unevenly split data
        self._rank_spread = self._ranks is not None and not self._ranks.sharded and gradients and optimizer is not None
        self._clock = StepClock(every, has_optimizer=optimizer is not None, budget=budget)
        self.budget = budget
        # budget=: the seconds of each step, end to end, and of gradscope's hooks in the timed ones
        self._timer = HookTimer() if budget is not None else None
        self._step_boundary = 0.0
        self._recorded_steps = 0  # written at once (on a GPU they are written by `_pending`)
        self._errors = HookErrors(lambda: self._clock.step)
        self._compile_state = CompileState()
        self._forward_unseen = False  # steps ended without any forward hook having run
        self._forward_order: dict[str, int] = {}
        self._sentinel = GradientSentinel()
        self._backward_end = BackwardEnd(self._hook("backward-end", self._on_backward_end), self._ranks is not None)
        self._handles: list[Any] = []  # hooks that run on every step
        self._window_handles: list[Any] = []  # the set for recorded steps, or the one between them
        self._hooks_recording: Optional[bool] = None  # which of the two sets is registered
        self._unit_handles: dict[str, Any] = {}  # between recorded steps: dead-unit hooks, by entry name
        self._active_check: Optional[tuple[list[str], AsyncFlags]] = None  # see _drop_active_layers
        self._probes: dict[str, OutputProbe] = {}  # how each watched module's outputs are measured
        self._output_hooks: dict[str, Hook] = {}
        self._input_hooks: dict[str, Hook] = {}
        self._unit_layout: dict[str, str] = {}  # the unit layout each output had on recorded steps
        self._step_handles: list[Any] = []  # tensor hooks on this step's outputs: gone with the step
        self._attached = False
        self._accumulator = StepAccumulator()
        self._window_start: Optional[StepAccumulator] = None  # the window as the last step left it
        self._void_steps = 0  # backward passes whose gradients were discarded without a step
        self._scaler_skips = ScalerSkips(self.scaler, optimizer) if self.scaler is not None else None
        self._local_norms: dict[int, torch.Tensor] = {}
        self._update = UpdateProbe()
        self._last_layout: Optional[str] = None
        # Activations called as functions in forward (F.relu, torch.tanh): seen in the input of the
        # Linear/Conv layer that reads them, one record entry each ("fc1→relu": after fc1).
        self._functional: dict[str, tuple[WatchedModule, OutputProbe]] = {}  # by the reading layer
        self._last_weight_layer: Optional[str] = None  # the Linear/Conv that ran last in this forward
        self._step_nodes: dict[int, Any] = {}  # autograd nodes of activations measured this step
        budget_option = {} if budget is None else {"budget": budget}
        # On a GPU a recorded step's one device-to-host copy is queued, not waited for: the step is
        # written to the record once the copy has landed (at a later step end), or when the record
        # is read or the watch detached. None: defer where waiting would stall the CPU (CUDA);
        # True runs the same path on a CPU (the tests do).
        self._defer_copies: Optional[bool] = None
        self._pending = PendingSteps()
        self._write_pending_hook = self._hook("record-step", lambda wait: self._pending.write(self._record, wait))
        header = meta.run_meta(
            self.model, optimizer, every=every, **budget_option, include=include, exclude=exclude, activations=activations,
            gradients=gradients, update_ratio=self.update_ratio, scaler=self.scaler is not None, world_size=self._world,
        )
        # Last: a bad path raises before anything else is set up. Only rank 0 writes a store.
        self._record = meta.open_record(header, path if self._rank == 0 else None, refresh=self._refresh_record)

    # ---- public API -----------------------------------------------------------------------
    def attach(self) -> "Watcher":
        if self._attached:
            raise GradscopeError("This Watcher is already attached; call detach() first.")
        meta.check_open(self._record)
        self._clock.attach()
        if self._timer is not None:  # time away from the loop (detached) is no step's
            self._timer.take(perf_counter())
            self._timer.active = self._clock.timing
            self._step_boundary = perf_counter()
        try:
            self._register_hooks()
        except BaseException:
            self._remove_hooks()
            raise
        self._attached = True
        return self

    def detach(self) -> RunRecord:
        """Remove every hook; the model is left exactly as it was. Returns the record."""
        self._detach()
        return self.record

    def _detach(self) -> None:
        try:
            if self._attached:
                self._check_discarded_gradients()
        finally:
            self._remove_hooks()
            self._attached = False
            self._clock.detach()
            self._update.clear()
            self._accumulator = StepAccumulator()
            self._window_start = None
            self._write_pending_hook.run(True)
            self._refresh_record()
            meta.close_record(self._record)

    def __enter__(self) -> "Watcher":
        if not self._attached:
            self.attach()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._detach()  # not detach(): a long run's store is read back only when asked for

    @property
    def record(self) -> RunRecord:
        """The run so far (complete once detached); with path=, read back from the store."""
        self._write_pending_hook.run(True)  # steps whose copy is still on its way: waited for now
        self._refresh_record()
        return meta.read_record(self._record)

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
        return self._clock.step

    @property
    def recorded_steps(self) -> int:
        """Number of recorded steps (every=N or budget= chose them) in the record so far: cheap to
        poll each step to learn whether one was added since the last look. On a GPU a step is
        added once its copy has landed, usually at the next step's end (see `landed_record`)."""
        return self._recorded_steps + self._pending.written

    def landed_record(self) -> RunRecord:
        """The run as far as it has reached the host, without waiting for the GPU; `record` waits
        for the recorded steps whose copy is still on its way. On a CPU the two are the same."""
        self._write_pending_hook.run(False)
        self._refresh_record()
        return meta.read_record(self._record)

    def log(self, **scalars: float) -> None:
        """Log named scalars (loss=..., val_loss=...) for the current step.

        A value logged after a training forward but before `optimizer.step()` belongs to the
        step in progress; one logged after the step (the usual place) to the step just taken.
        A tensor is copied to the host at once, which on a GPU waits for it: pass a float you
        already have (from `loss.item()`) where that matters.
        """
        if not self._keeps_statistics:
            return
        for name, value in scalars.items():
            if isinstance(value, torch.Tensor):
                value = value.detach().float().item()
            self._record.log_scalar(self._clock.log_step, name, float(value))

    # ---- hooks: one line per kind; each body below tells the clock and the accumulator ---------------
    def _register_hooks(self) -> None:
        """The hooks that run on every step (the step clock's), then the set for the step in progress."""
        add = self._handles.append
        add(self.model.register_forward_pre_hook(self._hook("forward", self._on_root_forward, compiled=True)))
        if self.functional_activations:  # one call a forward: an output activation's dead units need every batch
            add(self.model.register_forward_hook(self._hook("output", self._on_root_output, compiled=True)))
        if self._params_always_hooked:
            self._handles += self._register_param_hooks()
        if self.optimizer is not None:
            pre = self._hook("optimizer-step", self._on_optimizer_pre_step)
            self._handles += register_step_hooks(self.optimizer, pre, self._hook("optimizer-step", self._on_optimizer_post_step))
        self._probes = {
            w.name: OutputProbe(w, self.activations, self.gradients)
            for w in self._watched
            if w.watch_output and (self.activations or self.gradients)
        }
        self._output_hooks = {
            name: self._hook(f"forward:{name}", self._output_hook_for(w, self._probes[name]), compiled=True)
            for w in self._watched
            if (name := w.name) in self._probes
        }
        self._input_hooks = {
            w.name: self._hook(f"input:{w.name}", self._input_hook_for(w), compiled=True)
            for w in self._watched
            if self.functional_activations and is_weight_layer(w.module)
        }
        self._hooks_recording = None
        self._use_hooks_for(self._clock.recording)

    @property
    def _params_always_hooked(self) -> bool:
        # Without an optimizer a backward ends the step; with a GradScaler a skipped step is noticed
        # from discarded gradients: both need the gradient hooks on every step.
        return self.optimizer is None or self._scaler_skips is not None

    def _register_param_hooks(self) -> list[Any]:
        return [
            param.register_post_accumulate_grad_hook(self._hook(f"grad:{pname}", self._on_param_accumulated))
            for pname, param in self._params
            if param.requires_grad
        ]

    def _use_hooks_for(self, recording: bool) -> None:
        """Hooks for the step in progress: every measuring hook on a recorded step; between recorded
        steps only those that keep the dead-unit window, and only until every unit of their layer
        has been active once in the window (see `_drop_active_layers`), so a step that is not
        recorded costs next to nothing. (A compiled model keeps one set: changing hooks would make
        Dynamo recompile.)"""
        if recording == self._hooks_recording or (self._hooks_recording and self._compile_state.traced):
            return
        for handle in self._window_handles + list(self._unit_handles.values()):
            handle.remove()
        self._window_handles, self._unit_handles, self._active_check = [], {}, None
        add = self._window_handles.append
        for w in self._watched:
            module = w.module
            if recording:
                if w.name in self._output_hooks:
                    add(module.register_forward_hook(self._output_hooks[w.name]))
                if w.name in self._input_hooks:
                    add(module.register_forward_pre_hook(self._input_hooks[w.name]))
            elif self.activations:
                probe = self._probes.get(w.name)
                if probe is not None and probe.tracks_dead_units:
                    hook = self._hook(f"forward:{w.name}", self._unit_activity_hook_for(w, w, probe))
                    self._unit_handles[w.name] = module.register_forward_hook(hook)
                functional = self._functional.get(w.name)
                if functional is not None and functional[1].tracks_dead_units:
                    hook = self._hook(f"input:{w.name}", self._unit_activity_hook_for(w, *functional, reads_input=True))
                    self._unit_handles[functional[0].name] = module.register_forward_pre_hook(hook)
        if recording and not self._params_always_hooked:
            self._window_handles += self._register_param_hooks()
        self._hooks_recording = recording

    def _drop_active_layers(self) -> None:
        """Between recorded steps: stop watching a layer once each of its units was active in the
        window, since no later batch can make one of them dead in it. A healthy network then runs
        without gradscope hooks until the next recorded step. The check reads one flag per layer,
        copied without blocking (`AsyncFlags`) and looked at on a later step once it has arrived."""
        if not self._unit_handles:
            return
        if self._active_check is None:
            activity = self._accumulator.per_unit
            names = [name for name in self._unit_handles if name in activity]
            if not names:
                return
            silent = torch.stack([(activity[name] == 0).any() for name in names])
            self._active_check = (names, AsyncFlags(silent, self._pending.buffers))  # on a CPU readable at once
        names, flags = self._active_check
        values = flags.read()
        if values is None:
            return  # not arrived yet (a GPU still busy): look again after the next step
        self._active_check = None
        for name, has_silent_units in zip(names, values):
            if not has_silent_units:
                self._unit_handles.pop(name).remove()

    def _hook(self, where: str, fn: Callable[..., Any], compiled: bool = False) -> Hook:
        return Hook(where, fn, self._errors, self._compile_state if compiled else None, self._timer)

    def _remove_hooks(self) -> None:
        for handle in self._handles + self._window_handles + list(self._unit_handles.values()) + self._step_handles:
            handle.remove()
        self._handles.clear()
        self._window_handles, self._unit_handles, self._active_check = [], {}, None
        self._step_handles.clear()
        self._hooks_recording = None

    def _on_root_forward(self, module: nn.Module, args: Any) -> None:
        self._forward_begins(torch.is_grad_enabled() and module.training and not in_backward())

    def _forward_begins(self, training: bool) -> None:
        if training:
            self._check_discarded_gradients()
            self._last_layout = None
            self._last_weight_layer = None
        self._clock.forward(training)

    def _output_hook_for(self, w: WatchedModule, probe: OutputProbe) -> Callable[[nn.Module, Any, Any], None]:
        module_ref = weakref.ref(w.module)
        # Made once per module, not per call: the same hook goes on every output of this module.
        backprop_hook = self._hook(f"backprop:{w.name}", lambda grad: self._on_output_grad(w.name, grad))

        def on_forward(module: nn.Module, args: Any, output: Any) -> None:
            if module is not module_ref() or not torch.is_grad_enabled():
                return
            if not self._clock.forward_seen:  # the root's forward did not run: a LightningModule's training_step
                self._forward_begins(module.training and not in_backward())
            if not self._clock.module_forward(w.name, module.training, in_backward()):
                return  # non-reentrant activation checkpointing recomputes a forward already seen
            if not module.training:
                if self._clock.recording:
                    self._accumulator.add_eval_call(w.name)
                return
            self._forward_order.setdefault(w.name, len(self._forward_order))
            out = first_floating_tensor(output)
            if w.params and is_weight_layer(module):
                self._last_weight_layer = w.name
            if out is None:
                return
            if w.activation is not None and out.grad_fn is not None:
                self._step_nodes[id(out.grad_fn)] = out.grad_fn  # measured here: not again where it is read
            layout = w.layout or self._last_layout  # a module without its own layout: the previous one's
            if w.layout is not None:
                self._last_layout = w.layout
            elif layout is not None:
                self._unit_layout.setdefault(w.name, layout)
            if probe.measure(self._accumulator, out, layout, self._clock.recording):
                self._step_handles.append(register_gradient_hook(out, backprop_hook))

        return on_forward

    def _input_hook_for(self, w: WatchedModule) -> Callable[[nn.Module, Any], None]:
        """A Linear/Conv layer's input, when an activation function made it: the statistics of that
        activation (dead units, saturation), under an entry named after the layer that feeds it."""
        module_ref = weakref.ref(w.module)
        layout = "first" if isinstance(w.module, nn.modules.conv._ConvNd) else "last"

        def on_input(module: nn.Module, args: Any) -> None:
            if module is not module_ref() or not torch.is_grad_enabled() or not module.training or in_backward():
                return
            inp = first_floating_tensor(args)
            found = functional_activation(inp) if inp is not None else None
            if found is None:
                return
            self._measure_functional(w.name, *found, inp, module, layout, unnamed=f"{found[0]}→{w.name}")

        return on_input

    def _on_root_output(self, module: nn.Module, args: Any, output: Any) -> None:
        """The model's own output, when an activation function made it (`return torch.sigmoid(self.out(x))`):
        no layer reads it, so no input hook sees it. Measured like the others, as "out→sigmoid"."""
        if not torch.is_grad_enabled() or not module.training or in_backward():
            return
        if not self._clock.recording and _OUTPUT not in self._functional:
            return  # entries are made on recorded steps, where the module hooks say what was measured
        out = first_floating_tensor(output)
        found = functional_activation(out) if out is not None else None
        if found is not None:
            self._measure_functional(_OUTPUT, *found, out, module, self._last_layout, unnamed=f"output→{found[0]}")

    def _measure_functional(
        self, key: str, kind: str, node: Any, out: torch.Tensor, module: nn.Module, layout: Optional[str], unnamed: str
    ) -> None:
        """The output of an activation function (`kind`, made by autograd `node`) under the record
        entry of `key` (the layer that reads it, or _OUTPUT), named after the layer that feeds it."""
        if id(node) in self._step_nodes:
            return  # an activation module's output, or read by an earlier layer too: measured once
        self._step_nodes[id(node)] = node
        if key not in self._functional:
            feeding = self._last_weight_layer
            name = f"{feeding}→{kind}" if feeding is not None else unnamed
            entry = WatchedModule(name, module, kind, layout, [], watch_output=True, is_leaf=True)
            self._functional[key] = (entry, OutputProbe(entry, activations=True, gradients=False))
        entry, probe = self._functional[key]
        if entry.activation != kind:
            return  # another function feeds this place at another call: keep the first one's entry
        self._forward_order.setdefault(entry.name, len(self._forward_order))
        probe.measure(self._accumulator, out, entry.layout, self._clock.recording)

    def _unit_activity_hook_for(
        self, w: WatchedModule, entry: WatchedModule, probe: OutputProbe, reads_input: bool = False
    ) -> Callable[..., None]:
        """Between recorded steps: only which units were active (a dead unit is silent on every
        batch of the window), in `entry`'s output, or with `reads_input` in the activation function
        that `w`'s input is the output of."""
        module_ref = weakref.ref(w.module)

        def on_call(module: nn.Module, args: Any, *output: Any) -> None:
            if module is not module_ref() or not module.training or not torch.is_grad_enabled() or in_backward():
                return
            out = first_floating_tensor(args if reads_input else output[0])
            layout = entry.layout or self._unit_layout.get(entry.name)  # None: not yet seen on a recorded step
            if out is None or layout is None or (reads_input and functional_activation(out) is None):
                return
            probe.measure(self._accumulator, out, layout, recorded=False)

        return on_call

    def _on_output_grad(self, name: str, grad: torch.Tensor) -> None:
        self._accumulator.add_backprop(name, grad)
        if self.optimizer is None:
            self._backward_end.request()

    def _on_param_accumulated(self, param: nn.Parameter) -> None:
        if self._clock.param_grad() and self._scaler_skips is not None:
            self._scaler_skips.step_began(self._clock.recording)
        self._sentinel.mark(param)
        if self._rank_spread and self._clock.recording and param.grad is not None:
            # DDP's own hook on this gradient runs after this one: still this rank's gradient.
            self._local_norms[id(param)] = torch.linalg.vector_norm(param.grad.detach(), dtype=torch.float32)
        if self.optimizer is None or (self.gradients and self._clock.recording):
            self._backward_end.request()  # with an optimizer: the gradients before clipping

    def _on_backward_end(self) -> None:
        if self.optimizer is not None:
            # What this backward left, before clip_grad_norm_ or unscale_ can change it; the step's
            # last backward counts (the optimizer reads the final gradients in its pre-step hook).
            self._accumulator.add_backward_end_gradients(current_gradients(self._params, self._sharded)[0])
            return
        if self._clock.recording and self.gradients:
            self._accumulator.add_gradients(*current_gradients(self._params, self._sharded))
        self._close(self._clock.backward_end())

    def _on_optimizer_pre_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._clock.optimizer_pre_step()
        if not self._clock.recording or not self.gradients:
            return
        named, weights = current_gradients(self._params, self._sharded)
        self._accumulator.add_gradients(named, weights)
        if self._local_norms:
            self._accumulator.add_local_gradient_norm(list(self._local_norms.values()))
            self._local_norms = {}
        if self.update_ratio:
            self._update.before_step(named, weights)

    def _on_optimizer_post_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        try:
            self._update.after_step(self._accumulator)
        finally:
            self._close(self._clock.optimizer_post_step())  # always: under DDP/FSDP the other ranks wait

    # ---- steps --------------------------------------------------------------------------------------
    def _check_discarded_gradients(self) -> None:
        """A backward happened and no optimizer step followed: were its gradients consumed (zeroed,
        or unscaled in place)? A skipped step if the GradScaler says it skipped, else no step."""
        if self._clock.awaits_optimizer and self._sentinel.discarded():
            skipped = self._scaler_skips is not None and self._scaler_skips.skipped()
            self._close(self._clock.gradients_discarded(scaler_skipped=skipped))

    def _close(self, end: StepEnd) -> None:
        """Flush what the step measured, if it is recorded, and forget its tensors."""
        if end.forward_unseen and (self._compile_state.fullgraph or not end.first_since_attach):
            self._note_unseen_forward()  # the first step may have run its forward before attach()
        try:
            scale = self._scaler_skips.used_scale() if self._scaler_skips is not None else None
            if self._pending:  # earlier recorded steps whose copy has landed reach the record, in order
                self._write_pending_hook.run(False)
            if end.void:  # never a step: forget what was measured since the last one
                self._void_steps += 1
                self._accumulator = self._window_start.copy() if self._window_start else StepAccumulator()
            elif end.recorded:
                if scale is not None:
                    self._accumulator.queue("loss_scale", "", scale)
                accumulator, self._accumulator = self._accumulator, StepAccumulator()
                self._window_start = None
                entries = self._watched + self._functional_entries
                interval = self._clock.interval if self.budget is not None else None
                if PendingSteps.defers(accumulator, self._ranks is not None, self._defer_copies):
                    self._pending.add(accumulator, entries, end.step, end.skipped, interval)
                else:
                    values = accumulator.flush(self._ranks)
                    self._recorded_steps += 1
                    if self._keeps_statistics:
                        meta.write_step(self._record, entries, end.step, values, end.skipped, interval)
            else:
                # A void step is noticed only while recorded steps' hooks are on: it may roll back to here.
                if self.optimizer is not None and self._clock.recording:
                    self._window_start = self._accumulator.copy()
        finally:
            if self._timer is not None and not end.void:
                self._time_step()  # first: with a budget it may change whether the next step is recorded
            if self._attached or self._hooks_recording is not None:
                self._use_hooks_for(self._clock.recording)
                if not end.recorded and not end.void:
                    self._drop_active_layers()
            self._step_handles.clear()  # their tensors are gone with the step
            self._step_nodes = {}
            self._sentinel.clear()
            self._local_norms = {}

    def _time_step(self) -> None:
        """budget=: tell the clock how long the step that just ended took, end to end, and how
        long gradscope's hooks took in it if it was timed (its flush included). Swapping the hook
        sets for the next step comes after, and counts towards the next step's own time."""
        timer = self._timer
        now = perf_counter()
        timed = timer.active
        own = timer.take(now)
        wall, self._step_boundary = now - self._step_boundary, now
        self._clock.step_timed(wall, own if timed else None)
        if self._ranks is not None and timed:  # every rank decided now: they must record the same steps
            self._clock.agree_interval(self._ranks.agree_max(self._clock.interval))
        timer.active = self._clock.timing

    @property
    def _functional_entries(self) -> list[WatchedModule]:
        return [entry for entry, _ in self._functional.values()]

    @property
    def _keeps_statistics(self) -> bool:
        # Ranks combined by one collective all know the step's statistics; rank 0 keeps them.
        return self._ranks is None or self._ranks.is_main

    def _note_unseen_forward(self) -> None:
        """A training step whose forward no hook saw: compiled code that runs without them."""
        if not self._forward_unseen:
            self._forward_unseen = True
            warnings.warn(meta.unseen_forward_note(self._compile_state.fullgraph), RuntimeWarning, stacklevel=2)

    def _refresh_record(self) -> None:
        self._record.modules = meta.module_table(
            self._watched, self._forward_order, self._forward_unseen, self._functional_entries
        )
        self._record.hook_errors = self._errors.as_list()
        notes = [SAMPLING_NOTE]
        if self.optimizer is None:
            notes.append(meta.NO_OPTIMIZER_NOTE)
        if self._void_steps:
            every_step = self.recorded_steps >= self._clock.step
            notes.append(meta.void_steps_note(self._void_steps, self.scaler is not None, every_step))
        state = self._compile_state
        notes += meta.scale_out_notes(
            self._world, self._rank, self._ranks, self._forward_unseen, state.traced, state.fullgraph
        )
        meta.add_notes(self._record, notes)
        if self._clock.chooser is not None:
            meta.note_budget(self._record, self._clock.chooser)


def watch(model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None, **options: Any) -> Watcher:
    """A Watcher for `model`; use it in a `with` block, which attaches and detaches it.

    Options: every=N (record every Nth step), budget=F (record as often as costs at most the
    fraction F of the training time, e.g. 0.02: gradscope times its own hooks against the step
    time and chooses the interval; every=N is then the shortest interval), include=/exclude= (regexes on module names),
    activations=True, gradients=True, update_ratio=True, process_group=None (the ranks that
    train the model together; by default all ranks when the model is DDP-wrapped or FSDP2-sharded),
    scaler=None (the GradScaler of an AMP loop), path=None (a run store file, e.g. "runs/exp1.gsrun":
    each recorded step is streamed there, so memory stays flat and a crash loses about a second),
    functional_activations=True (measure activations called as functions, F.relu or torch.tanh, where
    a Linear/Conv layer reads them).

    Under torch.distributed every rank must watch the model (with the same options); only the
    main process (`run.is_main_process`, rank 0) keeps statistics: save and report there.
    """
    return Watcher(model, optimizer, **options)


__all__ = ["Watcher", "watch"]
