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
"""

from __future__ import annotations

import platform
import weakref
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Optional

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from . import __version__
from .errors import GradscopeError
from .model_tree import NONNEGATIVE, WatchedModule, saturation_counter, select_modules, unwrap
from .record import HookError, ModuleInfo, RunMeta, RunRecord
from .stats import SAMPLING_NOTE, StepAccumulator, StepValues, sample


def _inert_hook(*args: Any, **kwargs: Any) -> None:
    return None


def _inert_hook_factory() -> Callable[..., None]:
    return _inert_hook


class _Hook:
    """A callable registered on the user's objects.

    Copies of the model carry an inert stand-in: a `copy.deepcopy` (EMA models) never writes
    into this run's statistics, and `torch.save(model)` while watched pickles a no-op.
    """

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
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
        self._watched = select_modules(self.model, include, exclude)
        self._params = [(pname, p) for w in self._watched for pname, p in w.params]
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
    def step(self) -> int:
        """Number of training steps seen so far (optimizer steps, skipped ones included)."""
        return self._step

    def log(self, **scalars: float) -> None:
        """Log named scalars (loss=..., val_loss=...) for the current step.

        A value logged after a training forward but before `optimizer.step()` belongs to the
        step in progress; one logged after the step (the usual place) to the step just taken.
        """
        step = self._step if (self._forward_since_step or self._step == 0) else self._step - 1
        for name, value in scalars.items():
            if isinstance(value, torch.Tensor):
                value = value.detach().float().item()
            self._record.log_scalar(step, name, float(value))

    # ---- hooks: registration ------------------------------------------------------------------
    def _register_hooks(self) -> None:
        self._handles.append(self.model.register_forward_pre_hook(_Hook(self._guarded("forward", self._on_root_forward))))
        for w in self._watched:
            if w.watch_output and (self.activations or self.gradients):
                hook = _Hook(self._guarded(f"forward:{w.name}", self._forward_hook_for(w)))
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
        if not torch.is_grad_enabled() or not module.training or _in_backward():
            return
        if self.optimizer is not None and self._backward_since_step:
            self._maybe_end_skipped_step()
        self._forward_since_step = True
        self._last_layout = None

    def _forward_hook_for(self, w: WatchedModule) -> Callable[[nn.Module, Any, Any], None]:
        module_ref = weakref.ref(w.module)
        count_saturated = saturation_counter(w.module, w.activation)
        nonnegative = w.activation in NONNEGATIVE

        def on_forward(module: nn.Module, args: Any, output: Any) -> None:
            if module is not module_ref() or not torch.is_grad_enabled():
                return
            if _in_backward() and w.name in self._forwarded_this_step:
                return  # non-reentrant activation checkpointing recomputes a forward already seen
            if not module.training:
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
            if self.activations:
                unit_dim = (1 if layout == "first" else out.dim() - 1) if out.dim() >= 2 else None
                self._accumulator.add_activation(w.name, out, unit_dim, count_saturated, nonnegative)
            if self.gradients and out.requires_grad:
                name = w.name
                hook = _Hook(self._guarded(f"backprop:{name}", lambda grad: self._on_output_grad(name, grad)))
                self._tensor_handles.append(out.register_hook(hook))

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
        self._queue_backward_end()

    def _queue_backward_end(self) -> None:
        if self.optimizer is None and not self._backward_end_queued:
            self._backward_end_queued = True
            torch.autograd.Variable._execution_engine.queue_callback(
                self._guarded("backward-end", self._on_backward_end)
            )

    def _on_backward_end(self) -> None:
        self._backward_end_queued = False
        if self._is_recorded(self._step) and self.gradients:
            self._accumulator.add_gradients(*self._current_gradients())
        self._end_step(skipped=False)

    # ---- hooks: optimizer -----------------------------------------------------------------------
    def _on_optimizer_pre_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if not self._is_recorded(self._step) or not self.gradients:
            return
        named, weights = self._current_gradients()
        self._accumulator.add_gradients(named, weights)
        if self.update_ratio and named:
            # A copy of (a sample of) the weights, so the post-step hook can measure the update.
            samples = [sample(w.detach()) for w in weights]
            self._before_step = ([n for n, _ in named], samples, [s.clone() for s in samples])

    def _on_optimizer_post_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._before_step is not None:
            names, after, before = self._before_step  # `after`: views of the weights, updated in place
            self._before_step = None
            torch._foreach_sub_(before, after)
            self._accumulator.add_updates(names, before)
        self._end_step(skipped=False)

    def _current_gradients(self) -> tuple[list[tuple[str, torch.Tensor]], list[torch.Tensor]]:
        named, weights = [], []
        for pname, param in self._params:
            if param.grad is not None:
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

    def _end_step(self, skipped: bool) -> None:
        step = self._step
        self._step += 1
        if self._is_recorded(step):
            self._append(step, self._accumulator.flush(), skipped)
            self._accumulator = StepAccumulator()
        else:
            self._accumulator.end_unrecorded_step()
        self._tensor_handles.clear()  # their tensors are gone with the step
        self._forwarded_this_step = set()
        self._backward_since_step = False
        self._forward_since_step = False
        self._sentinel = None

    def _append(self, step: int, values: StepValues, skipped: bool) -> None:
        layer_values = {}
        for w in self._watched:
            stats = {**values.activation_stats(w.name), **values.backprop_stats(w.name)}
            if w.params and not skipped:
                stats.update(values.gradient_stats([pname for pname, _ in w.params]))
            layer_values[w.name] = stats
        param_values = {} if skipped else {pname: values.gradient_stats([pname]) for pname, _ in self._params}
        self._record.append_step(step, layer_values, param_values, skipped=skipped)

    def _reset_window(self) -> None:
        self._accumulator = StepAccumulator()
        self._forwarded_this_step: set[str] = set()
        self._backward_since_step = False
        self._forward_since_step = False
        self._backward_end_queued = False
        self._sentinel: Optional[tuple[Any, int, int]] = None
        self._before_step: Optional[tuple[list[str], list[torch.Tensor], list[torch.Tensor]]] = None
        self._last_layout: Optional[str] = None

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
                executed=w.name in order,
            )
            for _, w in ranked
        ]
        self._record.hook_errors = list(self._hook_errors.values())
        if SAMPLING_NOTE not in self._record.meta.notes:
            self._record.meta.notes.append(SAMPLING_NOTE)
        if self.optimizer is None:
            note = "Gradients were read after each backward (no optimizer given): update_ratio is unavailable."
            if note not in self._record.meta.notes:
                self._record.meta.notes.append(note)


def watch(model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None, **options: Any) -> Watcher:
    """A Watcher for `model`; use it in a `with` block, which attaches and detaches it.

    Options: every=N (record every Nth step), include=/exclude= (regexes on module names),
    activations=True, gradients=True, update_ratio=True.
    """
    return Watcher(model, optimizer, **options)


__all__ = ["Watcher", "watch"]
