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
from typing import TYPE_CHECKING, Callable, Optional

import torch

if TYPE_CHECKING:
    from .distributed import RankCombiner

Value = Optional[float]
_F32 = torch.float32

# Counting on a CPU (`count_nonzero`, comparisons, `abs`) costs 10-30x a fused sum or norm, so
# counts and |g| sums of large tensors are taken on a sample: every k-th slice along the first
# dimension, contiguous in memory. For an activation the slices are samples of the batch, which
# vary little, so ACTIVATION_SAMPLE entries suffice; for a weight they are output units, whose
# gradient scales differ, so PARAMETER_SAMPLE entries (more units) are taken. Tensors up to
# twice the sample size are always counted in full. The statistics this affects say so in
# statdefs and in every record's meta.notes.
ACTIVATION_SAMPLE = 1 << 12
PARAMETER_SAMPLE = 1 << 15
SAMPLING_NOTE = (
    f"act_std, act_sparsity and act_saturation of outputs with more than {2 * ACTIVATION_SAMPLE} entries, and "
    f"grad_mean_abs, grad_zero_frac and update_ratio of parameters with more than {2 * PARAMETER_SAMPLE} entries, "
    f"are estimated on every k-th slice along the first dimension (batch samples, output units) of about "
    f"{ACTIVATION_SAMPLE} and {PARAMETER_SAMPLE} entries; all other statistics are exact."
)


def sample_step(shape: tuple[int, ...], size: int) -> int:
    """k for `sample`: 1 (everything) for tensors up to twice `size` entries."""
    numel = math.prod(shape)
    if numel <= 2 * size or not shape:
        return 1
    return min(-(-numel // size), shape[0])


def sample(t: torch.Tensor, size: int) -> torch.Tensor:
    """Every k-th slice along dim 0: a view whose slices are contiguous, so it reads fast."""
    k = sample_step(tuple(t.shape), size)
    return t if k == 1 else t[::k]


def _units_2d(t: torch.Tensor, unit_dim: int) -> Optional[torch.Tensor]:
    """A (rows, units) view of `t` when the units are its innermost axis in memory."""
    if unit_dim == t.dim() - 1 and t.is_contiguous():
        return t.reshape(-1, t.shape[-1])
    if t.dim() == 4 and unit_dim == 1 and t.is_contiguous(memory_format=torch.channels_last):
        return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])
    return None


def per_unit_sum(t: torch.Tensor, unit_dim: int) -> torch.Tensor:
    """Sum over everything but the unit axis, as float32, without a transposed copy."""
    flat = _units_2d(t, unit_dim)
    if flat is not None:
        return flat.sum(0, dtype=_F32)
    if unit_dim == 1:  # (N, C, *spatial), contiguous: reduce the contiguous spatial block first
        return t.reshape(t.shape[0], t.shape[1], -1).sum(-1, dtype=_F32).sum(0)
    return t.sum([d for d in range(t.dim()) if d != unit_dim], dtype=_F32)


def per_unit_peak(t: torch.Tensor, unit_dim: int) -> torch.Tensor:
    """|max| + |min| per unit: 0 exactly when every entry of the unit is 0."""
    flat = _units_2d(t, unit_dim)
    if flat is not None:
        high, low = flat.amax(0), flat.amin(0)
    elif unit_dim == 1:  # (N, C, *spatial); aminmax(dim=-1) is several times slower than these two
        blocks = t.reshape(t.shape[0], t.shape[1], -1)
        high, low = blocks.amax(-1).amax(0), blocks.amin(-1).amin(0)
    else:
        dims = [d for d in range(t.dim()) if d != unit_dim]
        high, low = t.amax(dims), t.amin(dims)
    return high.float().abs_() + low.float().abs_()


def count_nonzero_fast(t: torch.Tensor) -> torch.Tensor:
    """Number of nonzero entries of a float tensor, via sign (vectorised), not count_nonzero."""
    return t.sign().abs_().sum(dtype=_F32)


@dataclass
class _LayerWindow:
    """Host-side counters of one module's outputs since the last recorded step."""

    calls: int = 0
    numel: int = 0
    batch: int = 0
    eval_calls: int = 0
    sampled: int = 0  # entries in the samples behind sparsity, saturation and std
    units: Optional[int] = 0  # 0: not seen yet; None: no unit axis, or calls disagreed on it
    saturating: bool = False


@dataclass
class StepAccumulator:
    """Everything measured since the last recorded step, still on the device."""

    # (key, 0-d tensor) in queue order; keys are (kind, name) pairs
    queued_keys: list[tuple[str, str]] = field(default_factory=list)
    queued: list[torch.Tensor] = field(default_factory=list)
    per_unit: dict[str, list[torch.Tensor]] = field(default_factory=lambda: defaultdict(list))
    layers: dict[str, _LayerWindow] = field(default_factory=lambda: defaultdict(_LayerWindow))
    param_numel: dict[str, int] = field(default_factory=dict)
    param_sampled: dict[str, int] = field(default_factory=dict)  # entries in the |g| / zero samples
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
        nonnegative: bool = False,
    ) -> None:
        out = output.detach()
        window = self.layers[name]
        window.calls += 1
        window.numel += out.numel()
        window.batch += out.shape[0] if out.dim() > 0 else 1
        if out.numel() == 0:
            return
        # Each reduction is one fused pass over the (still cached) output, with no temporaries.
        has_units = unit_dim is not None and out.dim() >= 2
        if has_units and nonnegative:
            # Per-unit sums give both the total and the dead units (sum 0 <=> all 0): one pass.
            unit_sums = per_unit_sum(out, unit_dim)
            total = unit_sums.sum()
            self._track_units(name, window, unit_sums)
        else:
            total = out.sum(dtype=_F32)
            if has_units:
                self._track_units(name, window, per_unit_peak(out, unit_dim))
            else:
                window.units = None
        self.queue("act_sum", name, total)
        # The spread, zeros and saturation come from the sample (all of a small tensor): a full
        # second pass over a large output costs more than everything else here together.
        part = sample(out, ACTIVATION_SAMPLE)
        window.sampled += part.numel()
        self.queue("act_sample_sum", name, total if part is out else part.sum(dtype=_F32))
        self.queue("act_norm", name, torch.linalg.vector_norm(part, dtype=_F32))
        self.queue("act_nonzero", name, count_nonzero_fast(part))
        if count_saturated is not None:
            window.saturating = True
            self.queue("act_saturated", name, count_saturated(part))

    def add_unit_activity(self, name: str, output: torch.Tensor, unit_dim: int, nonnegative: bool) -> None:
        """Between recorded steps only the dead-unit bookkeeping runs: a unit is dead only if it
        stayed silent for every batch since the previous recorded step."""
        out = output.detach()
        if out.dim() < 2 or out.numel() == 0:
            return
        window = self.layers[name]
        peak = per_unit_sum(out, unit_dim) if nonnegative else per_unit_peak(out, unit_dim)
        self._track_units(name, window, peak)

    def _track_units(self, name: str, window: _LayerWindow, peak: torch.Tensor) -> None:
        units = peak.numel()
        if window.units == 0:
            window.units = units
        elif window.units != units:
            window.units = None  # a reused module saw different widths: dead units are undefined
        if window.units is not None:
            self.per_unit[name].append(peak)

    def add_eval_call(self, name: str) -> None:
        self.layers[name].eval_calls += 1

    # ---- backprop signal (inside the tensor hook on a module's output) --------------------
    def add_backprop(self, name: str, grad: torch.Tensor) -> None:
        self.queue("backprop_norm", name, torch.linalg.vector_norm(grad.detach(), dtype=_F32))

    # ---- gradients and weights (at the optimizer step) ------------------------------------
    def add_gradients(self, named: list[tuple[str, torch.Tensor]], weights: list[torch.Tensor]) -> None:
        """All parameters' gradients at once: fused multi-tensor norms, small ops on samples."""
        if not named:
            return
        names = [n for n, _ in named]
        grads = [_dense(g) for _, g in named]
        self.params_with_grad.extend(names)
        samples = []
        for n, g in zip(names, grads):
            self.param_numel[n] = g.numel()
            part = sample(g, PARAMETER_SAMPLE)
            self.param_sampled[n] = part.numel()
            samples.append(part)
        for kind, values in (
            ("grad_norm", torch._foreach_norm(grads, 2, dtype=_F32)),
            ("weight_norm", torch._foreach_norm([_dense(w.detach()) for w in weights], 2, dtype=_F32)),
            ("grad_l1", torch._foreach_norm(samples, 1, dtype=_F32)),  # sum |g| of the sample
            ("grad_nonzero", torch._foreach_norm(samples, 0, dtype=_F32)),  # nonzero count of the sample
        ):
            for n, v in zip(names, values):
                self.queue(kind, n, v)
        for n, g in zip(names, grads):
            if g.numel():
                low, high = torch.aminmax(g)  # one pass, no temporary, unlike abs().max()
            else:  # an empty FSDP shard on this rank: the neutral elements of MAX and MIN
                high, low = g.new_full((), -math.inf, dtype=_F32), g.new_full((), math.inf, dtype=_F32)
            self.queue("grad_high", n, high)
            self.queue("grad_low", n, low)
        self.grads_for_nonfinite = dict(zip(names, grads))

    def add_local_gradient_norm(self, norms: list[torch.Tensor]) -> None:
        """This rank's own gradient norm before DDP averaged it (one value per rank)."""
        if norms:
            self.queue("rank_grad_norm", "", torch.linalg.vector_norm(torch.stack(norms)))

    def add_updates(self, names: list[str], deltas: list[torch.Tensor]) -> None:
        """Norms of (sampled) weight changes; `deltas` are taken on the slices `sample` picks."""
        if names:
            for n, v in zip(names, torch._foreach_norm(deltas, 2, dtype=_F32)):
                self.queue("update_norm", n, v)

    # ---- window bookkeeping -----------------------------------------------------------------
    def end_unrecorded_step(self) -> None:
        """Between recorded steps only per-unit activity accumulates: fold it to one tensor a layer."""
        for name, peaks in self.per_unit.items():
            if len(peaks) > 1:
                self.per_unit[name] = [torch.stack(peaks).sum(0)]

    def measurements(self) -> "Measurements":
        """Everything measured in the window, still on the device (one rank's share under DDP/FSDP)."""
        keys: list[tuple[str, str]] = []
        chunks: list[torch.Tensor] = []
        if self.queued:
            keys.extend(self.queued_keys)
            chunks.append(_stack(self.queued))
        unit_peaks = {}
        for name, peaks in self.per_unit.items():
            if self.layers[name].units is None or not peaks:
                continue
            # peak |output| per unit summed over calls: 0 exactly for units that were always 0
            unit_peaks[name] = peaks[0] if len(peaks) == 1 else torch.stack(peaks).sum(0)
        return Measurements(
            keys=keys,
            chunks=chunks,
            unit_peaks=unit_peaks,
            layers=dict(self.layers),
            param_numel=dict(self.param_numel),
            param_sampled=dict(self.param_sampled),
            params_with_grad=list(self.params_with_grad),
        )

    def flush(self, ranks: Optional["RankCombiner"] = None) -> "StepValues":
        """One device-to-host copy for everything measured in the window; with `ranks`, one
        collective that combines every rank's measurements into those of the global batch."""
        measured = self.measurements()
        values = measured.to_host() if ranks is None else ranks.combine(measured)
        self._count_nonfinite(values, ranks)
        return values

    def _count_nonfinite(self, values: "StepValues", ranks: Optional["RankCombiner"] = None) -> None:
        # Rare path, only on steps whose gradient norm is NaN/Inf: count the bad entries exactly.
        # Under DDP/FSDP every rank sees the same combined norms, so all of them take this path.
        bad = [n for n in values.params_with_grad if not math.isfinite(values.sums["grad_norm"].get(n, 0.0))]
        if not bad or (ranks is None and not self.grads_for_nonfinite):
            return
        local = [self.grads_for_nonfinite.get(n) for n in bad]
        counts = torch.stack(
            [torch.count_nonzero(~torch.isfinite(g)) if g is not None else torch.zeros((), dtype=torch.int64)
             for g in local]
        ).to(torch.float64)
        host = ranks.count_nonfinite(bad, counts) if ranks is not None else counts.tolist()
        for n, c in zip(bad, host):
            values.nonfinite[n] = float(c)


@dataclass
class Measurements:
    """One window as measured by this process: queued values still on the device, host counters."""

    keys: list[tuple[str, str]]  # (kind, name) of each entry of `chunks`, in order
    chunks: list[torch.Tensor]  # 1-d float64 device tensors
    unit_peaks: dict[str, torch.Tensor]  # per-unit sums of peaks (act_dead_frac)
    layers: dict[str, _LayerWindow]
    param_numel: dict[str, int]
    param_sampled: dict[str, int]
    params_with_grad: list[str]

    def to_host(self) -> "StepValues":
        keys = list(self.keys)
        chunks = list(self.chunks)
        for name, total in self.unit_peaks.items():
            keys.append(("act_dead", name))  # counted on the device: only the count is copied
            chunks.append((total == 0).sum().reshape(1))
        values = StepValues(
            layers=self.layers,
            param_numel=self.param_numel,
            param_sampled=self.param_sampled,
            params_with_grad=self.params_with_grad,
        )
        for (kind, name), value in zip(keys, _to_host(chunks)):
            values.add(kind, name, value)
        return values


@dataclass
class StepValues:
    """The host copy of one window: raw sums/counts/maxima keyed by kind and name."""

    sums: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    layers: dict[str, _LayerWindow] = field(default_factory=dict)
    param_numel: dict[str, int] = field(default_factory=dict)
    param_sampled: dict[str, int] = field(default_factory=dict)
    params_with_grad: list[str] = field(default_factory=list)
    nonfinite: dict[str, float] = field(default_factory=dict)
    rank_grad_norms: list[float] = field(default_factory=list)  # DDP: each rank's pre-average norm

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
        sampled = window.sampled
        # The spread is the sample's own (population) variance: using the exact mean with a
        # sampled mean square would cancel badly when the mean is large against the spread.
        sample_mean = self.sums["act_sample_sum"][name] / sampled
        sample_mean_square = self.sums["act_norm"][name] / sampled
        finite = math.isfinite(total) and math.isfinite(sample_mean_square)
        stats["act_sparsity"] = 1.0 - self.sums["act_nonzero"][name] / sampled
        stats["act_mean"] = mean
        stats["act_std"] = math.sqrt(max(sample_mean_square - sample_mean**2, 0.0)) if finite else math.nan
        stats["act_nonfinite"] = 0.0 if finite else 1.0
        if window.saturating:
            stats["act_saturation"] = self.sums["act_saturated"][name] / sampled
        dead = self.sums["act_dead"].get(name)
        if dead is not None and window.units:
            stats["act_dead_frac"] = dead / window.units
        return stats

    def backprop_stats(self, name: str) -> dict[str, Value]:
        squares = self.sums["backprop_norm"].get(name)
        if squares is None:
            return {}
        scale = self.sums["loss_scale"].get("", 1.0)  # GradScaler's factor, when the Watcher knows it
        return {"backprop_norm": math.sqrt(squares) / scale}

    def gradient_stats(self, param_names: list[str]) -> dict[str, Value]:
        """Statistics over the given parameters together (one parameter, or a module's)."""
        names = [n for n in param_names if n in self.sums["grad_norm"]]
        if not names:
            return {}
        s = self.sums
        numel = sum(self.param_numel[n] for n in names)
        grad_sq = sum(s["grad_norm"][n] ** 2 for n in names)
        weight_sq = sum(s["weight_norm"][n] ** 2 for n in names)
        # Sampled sums are scaled up to the whole parameter before parameters are combined.
        scale = {n: self.param_numel[n] / self.param_sampled[n] for n in names}
        stats: dict[str, Value] = {
            "grad_norm": math.sqrt(grad_sq),
            "grad_rms": math.sqrt(grad_sq / numel) if numel else None,
            "grad_mean_abs": sum(s["grad_l1"][n] * scale[n] for n in names) / numel if numel else None,
            "grad_max": max(max(s["grad_high"][n], -s["grad_low"][n]) for n in names),
            "grad_nonfinite": sum(self.nonfinite.get(n, 0.0) for n in names),
            "grad_zero_frac": 1.0 - sum(s["grad_nonzero"][n] * scale[n] for n in names) / numel if numel else None,
            "weight_norm": math.sqrt(weight_sq),
        }
        if all(n in s["update_norm"] for n in names):
            update_sq = sum(s["update_norm"][n] ** 2 * scale[n] for n in names)
            stats["update_ratio"] = math.sqrt(update_sq) / math.sqrt(weight_sq) if weight_sq > 0 else None
        return stats


def _dense(t: torch.Tensor) -> torch.Tensor:
    if t.is_sparse:
        return t.coalesce()._values()  # statistics of the stored entries of a sparse gradient
    return t


def _stack(values: list[torch.Tensor]) -> torch.Tensor:
    """Stack 0-d tensors (dtypes are promoted) into one vector."""
    try:
        return torch.stack(values)
    except RuntimeError:
        # A model split over devices: move the (tiny) values to one device first.
        target = values[0].device
        return torch.stack([v.to(target) for v in values])


def _to_host(chunks: list[torch.Tensor]) -> list[float]:
    if not chunks:
        return []
    if len({c.device for c in chunks}) > 1:
        chunks = [c.to(chunks[0].device) for c in chunks]
    return torch.cat(chunks).tolist()  # the one device-to-host copy of the step
