"""The hook wrapper, and every private torch, Dynamo and autograd call gradscope makes.

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
  a step when there is no optimizer, and gradients discarded without a step.

Every hook is a `Hook`: it never raises into the user's training (an exception in gradscope's
own code is counted in `HookErrors`) and copies of the model carry an inert stand-in.

torch.compile: a hook that Dynamo traces runs eagerly in a graph break when the compile allows
graph breaks (statistics as in eager mode); under `fullgraph=True` it does nothing, so the
compiled graph stays whole, and the record says which statistics are missing.

Everything that reaches into torch's private API lives here, once, so a torch upgrade that
moves one of them is a change to one function. The public calls all exist in torch 2.3, the
oldest release setup.cfg allows; private attributes whose shape changed between releases are
read with a fallback (`getattr`) rather than by version number.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from time import perf_counter
from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.amp.grad_scaler import OptState
from torch.utils._pytree import tree_leaves

from ..errors import GradscopeError
from ..record import HookError


# ---- the hook wrapper ---------------------------------------------------------------------------
def _inert_hook(*args: Any, **kwargs: Any) -> None:
    return None


def _inert_hook_factory() -> Callable[..., None]:
    return _inert_hook


class CompileState:
    """What the hooks noticed of torch.compile (attributes set inside traced code are replayed
    by Dynamo on every call of the compiled graph)."""

    def __init__(self) -> None:
        self.traced = False  # a hook was traced by Dynamo
        self.fullgraph = False  # ... inside a graph that must not break: it did nothing


class HookErrors:
    """Exceptions raised inside gradscope's hook bodies, counted by place and message."""

    def __init__(self, current_step: Callable[[], int]) -> None:
        self._current_step = current_step
        self._errors: dict[tuple[str, str], HookError] = {}

    def add(self, where: str, exc: Exception) -> None:
        key = (where, f"{type(exc).__name__}: {exc}")
        if key in self._errors:
            self._errors[key].count += 1
        else:
            self._errors[key] = HookError(where=where, error=key[1], first_step=self._current_step())

    def as_list(self) -> list[HookError]:
        return list(self._errors.values())


class HookTimer:
    """The seconds gradscope's hook bodies took on the training thread, summed while `active`
    (budget=: only on the steps the clock times, so the other steps pay one attribute read).

    On a GPU this is CPU time spent queueing gradscope's kernels and reading the one copy per
    recorded step: the cost to the training thread, which is what slows the loop while the
    kernels of the step run asynchronously.
    """

    __slots__ = ("active", "seconds", "started")

    def __init__(self) -> None:
        self.active = False
        self.seconds = 0.0
        self.started: Optional[float] = None  # set while a timed hook body runs

    def take(self, now: float) -> float:
        """The seconds since the last take, a hook body running now included up to `now`."""
        seconds, self.seconds = self.seconds, 0.0
        if self.started is not None:
            seconds += now - self.started
            self.started = now  # the rest of that body counts towards the next take
        return seconds


class Hook:
    """A callable registered on the user's objects: runs `fn`, records its exceptions in
    `errors` under `where`, and always returns None (a tensor hook leaves the gradient as is).
    With an active `timer`, the time the body takes is added to it.

    Copies of the model carry an inert stand-in: a `copy.deepcopy` (EMA models) never writes
    into this run's statistics, and `torch.save(model)` while watched pickles a no-op.
    """

    __slots__ = ("where", "fn", "errors", "compile_state", "timer")

    def __init__(
        self,
        where: str,
        fn: Callable[..., Any],
        errors: HookErrors,
        compile_state: Optional[CompileState] = None,
        timer: Optional[HookTimer] = None,
    ) -> None:
        self.where = where
        self.fn = fn
        self.errors = errors
        self.compile_state = compile_state
        self.timer = timer

    def __call__(self, *args: Any) -> None:
        if _is_compiling():  # Dynamo is tracing this call (a compiled forward)
            state = self.compile_state
            if _graph_breaks_allowed():
                if state is not None:
                    state.traced = True
                return _call_eagerly(self.run, args)
            if state is not None:
                state.traced = True
                state.fullgraph = True
            return None
        return self.run(*args)

    def run(self, *args: Any) -> None:
        timer = self.timer
        if timer is not None and timer.active and timer.started is None:
            return self._timed(timer, args)
        try:
            self.fn(*args)
        except Exception as exc:  # noqa: BLE001 - observation must never break training
            self.errors.add(self.where, exc)
        return None

    def _timed(self, timer: HookTimer, args: tuple) -> None:
        timer.started = perf_counter()
        try:
            self.fn(*args)
        except Exception as exc:  # noqa: BLE001 - observation must never break training
            self.errors.add(self.where, exc)
        finally:
            if timer.started is not None:
                timer.seconds += perf_counter() - timer.started
            timer.started = None
        return None

    def __deepcopy__(self, memo: dict) -> Callable[..., None]:
        return _inert_hook

    def __reduce__(self) -> tuple:
        return (_inert_hook_factory, ())


# ---- torch.compile / Dynamo -----------------------------------------------------------------------
_is_compiling = torch.compiler.is_compiling  # public since torch 2.3, the oldest release gradscope supports


def _graph_breaks_allowed() -> bool:
    """Evaluated once while Dynamo traces a hook (a constant of the trace): may the graph break?"""
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        tx = InstructionTranslator.current_tx()
        # `one_graph` is fullgraph=True; `error_on_graph_break` (newer releases) is set by
        # torch._dynamo.error_on_graph_break(True): both forbid the break a hook would cause.
        return not (getattr(tx, "one_graph", False) or getattr(tx, "error_on_graph_break", False))
    except Exception:  # noqa: BLE001 - unknown Dynamo internals: keep the graph whole
        return False


# Set by hand rather than with torch._dynamo.assume_constant_result: importing Dynamo costs seconds.
_graph_breaks_allowed._dynamo_marked_constant = True  # type: ignore[attr-defined]


def _call(fn: Callable[..., Any], args: tuple) -> Any:
    return fn(*args)


_call_eagerly = torch._disable_dynamo(_call)  # a graph break: the hook body runs as plain Python


# ---- autograd -------------------------------------------------------------------------------------
def in_backward() -> bool:
    """True inside a backward pass (a forward here is an activation-checkpoint recompute)."""
    return torch._C._current_graph_task_id() != -1


class BackwardEnd:
    """Calls `hook` once at the end of each backward pass that asks for it.

    With `after_others`, it re-queues itself once so it runs after callbacks queued later in
    the same backward: DDP and FSDP finish their gradient reduction in such a callback.
    """

    def __init__(self, hook: Hook, after_others: bool) -> None:
        self._hook = hook
        self._after_others = after_others
        self._queued_for = -2  # the graph task it is queued in (-1 outside any backward)

    def request(self) -> None:
        task = torch._C._current_graph_task_id()
        if task != self._queued_for:
            self._queued_for = task
            torch.autograd.Variable._execution_engine.queue_callback(self._first if self._after_others else self._hook)

    def _first(self) -> None:
        torch.autograd.Variable._execution_engine.queue_callback(self._hook)


def first_floating_tensor(output: Any) -> Optional[torch.Tensor]:
    """The module output gradscope measures: the tensor itself, or the first floating leaf of a
    tuple, list or dict output."""
    if isinstance(output, torch.Tensor):
        return output if output.is_floating_point() else None
    for leaf in tree_leaves(output):
        if isinstance(leaf, torch.Tensor) and leaf.is_floating_point():
            return leaf
    return None


def register_gradient_hook(tensor: torch.Tensor, hook: Hook) -> Any:
    """Call `hook(dL/d(tensor))` in the backward; returns the handle.

    A pre-hook on the autograd node that made the tensor, given the gradients of all that
    node's outputs, picks this tensor's: what `tensor.register_hook` gives (a later in-place op
    on the tensor does not change which gradient it is), at about half the cost of registering,
    which matters when every output of every layer gets one each recorded step. A tensor that
    no node made (a leaf) gets a tensor hook.
    """
    node = tensor.grad_fn
    if node is None:
        return tensor.register_hook(hook)
    index = tensor.output_nr

    def pick(grad_outputs: tuple) -> None:
        grad = grad_outputs[index] if index < len(grad_outputs) else None
        if grad is not None:
            hook(grad)

    return node.register_prehook(pick)


class GradientSentinel:
    """Remembers the last gradient a backward accumulated, to notice later that it was
    consumed without an optimizer step: set to None, replaced, or changed in place (zeroed,
    or unscaled by GradScaler). Holds no reference to the gradient itself."""

    def __init__(self) -> None:
        self._mark: Optional[tuple[Any, int, int]] = None

    def mark(self, param: nn.Parameter) -> None:
        grad = param.grad
        if grad is not None:
            self._mark = (weakref.ref(param), id(grad), grad._version)

    def clear(self) -> None:
        self._mark = None

    def discarded(self) -> bool:
        if self._mark is None:
            return False
        param_ref, grad_id, version = self._mark
        param = param_ref()
        grad = param.grad if param is not None else None
        return grad is None or id(grad) != grad_id or grad._version != version


# ---- optimizers and GradScaler --------------------------------------------------------------------
def unwrap_optimizer(optimizer: Any) -> tuple[torch.optim.Optimizer, Any]:
    """The torch optimizer to hook inside the wrappers users hold, and the GradScaler a wrapper
    carries (or None).

    accelerate's AcceleratedOptimizer (what a Hugging Face Trainer hands its callbacks) subclasses
    Optimizer without running its __init__, so it has no hook tables, and steps `.optimizer`
    (through `.scaler` under fp16); Lightning's LightningOptimizer steps `.optimizer`; DeepSpeed's
    ZeRO optimizers step `.optimizer` too. Hooking the innermost torch optimizer sees every real
    step, whoever calls it.
    """
    current, scaler = optimizer, None
    for _ in range(8):  # a wrapper of a wrapper at most, in practice; never a cycle
        if isinstance(current, torch.optim.lr_scheduler.LRScheduler):
            raise GradscopeError(
                f"optimizer= got a learning-rate scheduler ({type(current).__name__}); pass the optimizer it "
                "schedules (scheduler.optimizer)."
            )
        carried = getattr(current, "scaler", None)
        if scaler is None and callable(getattr(carried, "is_enabled", None)):
            scaler = carried
        inner = getattr(current, "optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer) or inner is current:
            break
        current = inner
    if not isinstance(current, torch.optim.Optimizer) or not hasattr(current, "_optimizer_step_pre_hooks"):
        raise GradscopeError(
            f"optimizer= must be a torch.optim.Optimizer, or a wrapper that holds one as .optimizer (accelerate's "
            f"AcceleratedOptimizer, Lightning's LightningOptimizer, DeepSpeed's ZeRO optimizers); got "
            f"{type(optimizer).__name__}. Pass the optimizer that steps the watched model's parameters, or leave "
            "optimizer= out to read gradients after each backward."
        )
    return current, scaler


class ReadAfterClosure:
    """An optimizer step pre-hook that runs `pre` when the gradients are final.

    That is at once, unless `step()` was given a closure: then the forward, the backward and
    any clipping happen inside it (Lightning always passes one), so `pre` runs right after the
    closure's first call returns (LBFGS calls it again while it searches; the first call's
    gradients are the step's). Returning new arguments is how a step pre-hook swaps the closure.
    """

    __slots__ = ("pre",)

    def __init__(self, pre: Hook) -> None:
        self.pre = pre

    def __call__(self, optimizer: Any, args: tuple, kwargs: dict) -> Optional[tuple[tuple, dict]]:
        # `args` are step()'s own: (optimizer, closure?, ...)
        closure = kwargs.get("closure") if "closure" in kwargs else (args[1] if len(args) > 1 else None)
        if not callable(closure):
            self.pre(optimizer, args, kwargs)
            return None
        pending = [self.pre]

        def closure_then_read(*closure_args: Any, **closure_kwargs: Any) -> Any:
            result = closure(*closure_args, **closure_kwargs)
            if pending:
                pending.pop()(optimizer, args, kwargs)
            return result

        if "closure" in kwargs:
            return args, {**kwargs, "closure": closure_then_read}
        return (args[0], closure_then_read, *args[2:]), kwargs

    def __deepcopy__(self, memo: dict) -> Callable[..., None]:
        return _inert_hook

    def __reduce__(self) -> tuple:
        return (_inert_hook_factory, ())


def register_step_hooks(optimizer: torch.optim.Optimizer, pre: Hook, post: Hook) -> list[Any]:
    """Hooks around `optimizer.step()` (public since torch 2.0); returns their handles. `pre` reads
    the gradients when they are final (see ReadAfterClosure)."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise GradscopeError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}. Pass the optimizer "
            "that steps the watched model's parameters, or leave optimizer= out to read gradients after "
            "each backward."
        )
    return [optimizer.register_step_pre_hook(ReadAfterClosure(pre)), optimizer.register_step_post_hook(post)]


class ScalerSkips:
    """Whether GradScaler skipped the watched optimizer's step, from the scaler's own bookkeeping.

    GradScaler keeps, per optimizer and per iteration (until `update()`), a small dict: its stage
    (READY, UNSCALED, STEPPED) and the found-inf flags of the gradients it unscaled. At the first
    backward of a step this holds that dict (creating the READY entry the scaler itself would
    create, as its defaultdict does); the scaler fills it in when it steps or skips this
    optimizer, and `update()` replaces the table but not the dict held here. A step it skipped is
    then STEPPED with a found-inf flag set: read once, only when gradients were discarded without
    a step. No guess from the gradients or the loss scale: a GAN's discriminator, whose gradients
    from the generator's loss are thrown away, is never mistaken for an AMP overflow.

    (The held entry makes the scaler refuse to be pickled whole until its next `update()`; saving
    `scaler.state_dict()`, the documented way, is unaffected.)
    """

    def __init__(self, scaler: Any, optimizer: torch.optim.Optimizer) -> None:
        self._scaler = scaler
        self._optimizer = optimizer
        self._entry: Optional[dict] = None
        self._scale: Optional[torch.Tensor] = None

    def step_began(self, recorded: bool) -> None:
        """At a step's first backward: hold this iteration's entry, and the loss scale of the step."""
        states = getattr(self._scaler, "_per_optimizer_states", None)  # private: no public equivalent
        self._entry = None
        if isinstance(states, defaultdict):
            entry = states[id(self._optimizer)]
            # Not READY: the scaler already stepped (or skipped) this optimizer in this iteration,
            # so this backward's gradients cannot be part of a step it skips.
            if isinstance(entry, dict) and entry.get("stage") is OptState.READY:
                self._entry = entry
        scale = getattr(self._scaler, "_scale", None)
        self._scale = scale.detach().reshape(()).float().clone() if recorded and scale is not None else None

    def skipped(self) -> bool:
        """Did the scaler skip the step whose gradients were just found discarded? (one host copy)"""
        entry, self._entry = self._entry, None
        if entry is None or entry.get("stage") is not OptState.STEPPED:
            return False
        return any(bool(flag.item()) for flag in entry.get("found_inf_per_device", {}).values())

    def used_scale(self) -> Optional[torch.Tensor]:
        """The factor the loss was multiplied by in the step that just ended (0-d, on its device)."""
        scale, self._scale = self._scale, None
        if scale is None:  # the step's backward ran before attach(): the scale now is the one it used
            now = getattr(self._scaler, "_scale", None)
            scale = now.detach().reshape(()).float() if now is not None else None
        return scale
