"""Device-side reductions and the once-per-step flush to the host.

Hooks hand tensors to a `StepAccumulator` while they are fresh (an activation inside its
forward hook, before a following in-place op can overwrite it; a gradient at the optimizer
step). Each tensor is reduced on its device to a few 0-d tensors that are queued, never
read. At the end of a recorded step `flush()` stacks every queued value into one tensor,
copies it to the host once, and turns the sums, counts and maxima into the statistics of
`statdefs`. Keeping sums/counts/maxima (not ratios) until the flush is what lets several
calls, micro-batches, steps of a window, or ranks be combined exactly.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

Value = Optional[float]
_F32 = torch.float32


@dataclass
class _LayerWindow:
    """Host-side counters of one module's outputs since the last recorded step."""

    calls: int = 0
    numel: int = 0
    batch: int = 0
    eval_calls: int = 0
    units: Optional[int] = None  # None: no unit axis, or calls disagreed on it
    saturating: bool = False


@dataclass
class StepAccumulator:
    """Everything measured since the last recorded step, still on the device."""

    # (key, 0-d tensor) in queue order; keys are (kind, name) pairs
    queued_keys: list[tuple[str, str]] = field(default_factory=list)
    queued: list[torch.Tensor] = field(default_factory=list)
    # stacked values of earlier (unrecorded) steps in the window, with their keys
    parked: list[tuple[list[tuple[str, str]], torch.Tensor]] = field(default_factory=list)
    per_unit: dict[str, list[torch.Tensor]] = field(default_factory=lambda: defaultdict(list))
    layers: dict[str, _LayerWindow] = field(default_factory=lambda: defaultdict(_LayerWindow))
    steps_in_window: int = 0
    param_numel: dict[str, int] = field(default_factory=dict)
    params_with_grad: list[str] = field(default_factory=list)
    # tensors needed for the follow-up count of non-finite gradient entries (rare path)
    grads_for_nonfinite: dict[str, torch.Tensor] = field(default_factory=dict)

    def queue(self, kind: str, name: str, value: torch.Tensor) -> None:
        self.queued_keys.append((kind, name))
        self.queued.append(value)

    # ---- activations (inside the forward hook) --------------------------------------------
    def add_activation(
        self,
        name: str,
        output: torch.Tensor,
        unit_dim: Optional[int],
        count_saturated: Optional[Callable[[torch.Tensor], torch.Tensor]],
    ) -> None:
        out = output.detach()
        window = self.layers[name]
        window.calls += 1
        window.numel += out.numel()
        window.batch += out.shape[0] if out.dim() > 0 else 1
        if out.numel() == 0:
            return
        if unit_dim is not None and out.dim() >= 2:
            # One pass gives both the per-unit "fired" counts (dead units) and the zero count.
            reduce_dims = [d for d in range(out.dim()) if d != unit_dim]
            fired = torch.count_nonzero(out, dim=reduce_dims)
            self._track_units(name, window, fired)
            nonzero = fired.sum()
        else:
            window.units = None
            nonzero = torch.count_nonzero(out)
        self.queue("act_nonzero", name, nonzero)
        self.queue("act_sum", name, out.sum(dtype=_F32))
        # sum of squares via the norm: fused, no temporary the size of the output
        self.queue("act_norm", name, torch.linalg.vector_norm(out, dtype=_F32))
        if count_saturated is not None:
            window.saturating = True
            self.queue("act_saturated", name, count_saturated(out))

    def _track_units(self, name: str, window: _LayerWindow, fired: torch.Tensor) -> None:
        units = fired.numel()
        if window.calls == 1:
            window.units = units
        elif window.units != units:
            window.units = None  # a reused module saw different widths: dead units are undefined
        if window.units is not None:
            self.per_unit[name].append(fired)

    def add_eval_call(self, name: str) -> None:
        self.layers[name].eval_calls += 1

    # ---- backprop signal (inside the tensor hook on a module's output) --------------------
    def add_backprop(self, name: str, grad: torch.Tensor) -> None:
        self.queue("backprop_norm", name, torch.linalg.vector_norm(grad.detach(), dtype=_F32))

    # ---- gradients and weights (at the optimizer step) ------------------------------------
    def add_gradients(self, named: list[tuple[str, torch.Tensor]], weights: list[torch.Tensor]) -> None:
        """All parameters' gradients at once: four fused multi-tensor passes, no per-layer ops."""
        if not named:
            return
        names = [n for n, _ in named]
        grads = [_dense(g) for _, g in named]
        self.params_with_grad.extend(names)
        for n, g in zip(names, grads):
            self.param_numel[n] = g.numel()
        for kind, values in (
            ("grad_norm", torch._foreach_norm(grads, 2, dtype=_F32)),
            ("grad_l1", torch._foreach_norm(grads, 1, dtype=_F32)),
            ("grad_max", torch._foreach_norm(grads, math.inf, dtype=_F32)),
            ("grad_nonzero", torch._foreach_norm(grads, 0, dtype=_F32)),
            ("weight_norm", torch._foreach_norm([_dense(w.detach()) for w in weights], 2, dtype=_F32)),
        ):
            for n, v in zip(names, values):
                self.queue(kind, n, v)
        self.grads_for_nonfinite = dict(zip(names, grads))

    def add_updates(self, names: list[str], deltas: list[torch.Tensor]) -> None:
        if names:
            for n, v in zip(names, torch._foreach_norm(deltas, 2, dtype=_F32)):
                self.queue("update_norm", n, v)

    # ---- window bookkeeping -----------------------------------------------------------------
    def end_unrecorded_step(self) -> None:
        """Fold this step's queued scalars into one tensor, so a long window holds few tensors."""
        self.steps_in_window += 1
        self.grads_for_nonfinite = {}
        if self.queued:
            self.parked.append((self.queued_keys, _stack(self.queued)))
            self.queued_keys, self.queued = [], []

    def flush(self) -> "StepValues":
        """One device-to-host copy (per device) for everything measured in the window."""
        self.steps_in_window += 1
        keys: list[tuple[str, str]] = []
        chunks: list[torch.Tensor] = []
        for parked_keys, stacked in self.parked:
            keys.extend(parked_keys)
            chunks.append(stacked)
        if self.queued:
            keys.extend(self.queued_keys)
            chunks.append(_stack(self.queued))
        dead_names = []
        for name, counts in self.per_unit.items():
            window = self.layers[name]
            if window.units is None or not counts:
                continue
            total = counts[0] if len(counts) == 1 else torch.stack(counts).sum(0)
            keys.append(("act_dead", name))
            chunks.append((total == 0).sum().reshape(1))
            dead_names.append(name)
        host = _to_host(chunks)
        values = StepValues(steps_in_window=self.steps_in_window)
        for (kind, name), value in zip(keys, host):
            values.add(kind, name, value)
        values.layers = dict(self.layers)
        values.param_numel = dict(self.param_numel)
        values.params_with_grad = list(self.params_with_grad)
        self._count_nonfinite(values)
        return values

    def _count_nonfinite(self, values: "StepValues") -> None:
        # Rare path, only on steps whose gradient norm is NaN/Inf: count the bad entries exactly.
        bad = [n for n in values.params_with_grad if not math.isfinite(values.sums["grad_norm"].get(n, 0.0))]
        if not bad or not self.grads_for_nonfinite:
            return
        counts = torch.stack(
            [torch.count_nonzero(~torch.isfinite(self.grads_for_nonfinite[n])) for n in bad]
        ).tolist()
        for n, c in zip(bad, counts):
            values.nonfinite[n] = float(c)


@dataclass
class StepValues:
    """The host copy of one window: raw sums/counts/maxima keyed by kind and name."""

    steps_in_window: int = 1
    sums: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    squares: dict[str, float] = field(default_factory=dict)  # backprop: sum of squared norms
    layers: dict[str, _LayerWindow] = field(default_factory=dict)
    param_numel: dict[str, int] = field(default_factory=dict)
    params_with_grad: list[str] = field(default_factory=list)
    nonfinite: dict[str, float] = field(default_factory=dict)

    def add(self, kind: str, name: str, value: float) -> None:
        if kind in ("act_norm", "backprop_norm"):
            self.sums[kind][name] = self.sums[kind].get(name, 0.0) + value * value
        else:
            self.sums[kind][name] = self.sums[kind].get(name, 0.0) + value

    # ---- statistics ---------------------------------------------------------------------------
    def activation_stats(self, name: str) -> dict[str, Value]:
        window = self.layers.get(name)
        if window is None:
            return {}
        stats: dict[str, Value] = {"act_eval_calls": float(window.eval_calls)}
        if window.calls == 0:
            return stats
        n = window.numel
        total = self.sums["act_sum"].get(name)
        stats["act_calls"] = float(window.calls)
        stats["act_batch"] = window.batch / window.calls
        if n == 0 or total is None:
            return stats
        mean = total / n
        mean_square = self.sums["act_norm"][name] / n
        finite = math.isfinite(total) and math.isfinite(mean_square)
        stats["act_sparsity"] = 1.0 - self.sums["act_nonzero"][name] / n
        stats["act_mean"] = mean
        stats["act_std"] = math.sqrt(max(mean_square - mean * mean, 0.0)) if finite else math.nan
        stats["act_nonfinite"] = 0.0 if finite else 1.0
        if window.saturating:
            stats["act_saturation"] = self.sums["act_saturated"][name] / n
        dead = self.sums["act_dead"].get(name)
        if dead is not None and window.units:
            stats["act_dead_frac"] = dead / window.units
        return stats

    def backprop_stats(self, name: str) -> dict[str, Value]:
        squares = self.sums["backprop_norm"].get(name)
        if squares is None:
            return {}
        return {"backprop_norm": math.sqrt(squares / self.steps_in_window)}

    def gradient_stats(self, param_names: list[str]) -> dict[str, Value]:
        """Statistics over the given parameters together (one parameter, or a module's)."""
        names = [n for n in param_names if n in self.sums["grad_norm"]]
        if not names:
            return {}
        s = self.sums
        numel = sum(self.param_numel[n] for n in names)
        grad_sq = sum(s["grad_norm"][n] ** 2 for n in names)
        weight_sq = sum(s["weight_norm"][n] ** 2 for n in names)
        stats: dict[str, Value] = {
            "grad_norm": math.sqrt(grad_sq),
            "grad_rms": math.sqrt(grad_sq / numel) if numel else None,
            "grad_mean_abs": sum(s["grad_l1"][n] for n in names) / numel if numel else None,
            "grad_max": max(s["grad_max"][n] for n in names),
            "grad_nonfinite": sum(self.nonfinite.get(n, 0.0) for n in names),
            "grad_zero_frac": 1.0 - sum(s["grad_nonzero"][n] for n in names) / numel if numel else None,
            "weight_norm": math.sqrt(weight_sq),
        }
        if all(n in s["update_norm"] for n in names):
            update_sq = sum(s["update_norm"][n] ** 2 for n in names)
            stats["update_ratio"] = math.sqrt(update_sq) / math.sqrt(weight_sq) if weight_sq > 0 else None
        return stats


def _dense(t: torch.Tensor) -> torch.Tensor:
    if t.is_sparse:
        return t.coalesce()._values()  # statistics of the stored entries of a sparse gradient
    return t


def _stack(values: list[torch.Tensor]) -> torch.Tensor:
    """Stack 0-d tensors of mixed dtypes, grouped by device, into one float64 vector per device."""
    devices = {v.device for v in values}
    if len(devices) == 1:
        return torch.stack([v.reshape(()) for v in values]).to(torch.float64)
    # A model split over devices: keep the order, move the (tiny) values to one device first.
    target = values[0].device
    return torch.stack([v.reshape(()).to(target) for v in values]).to(torch.float64)


def _to_host(chunks: list[torch.Tensor]) -> list[float]:
    if not chunks:
        return []
    flat = torch.cat([c.reshape(-1).to(chunks[0].device, torch.float64) for c in chunks])
    return flat.tolist()  # the one device-to-host copy of the step
