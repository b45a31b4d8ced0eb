"""What gradscope measures, how each measurement folds, and the reductions that take it.

A statistic of `statdefs` is computed on the host from a few raw *measured kinds*: sums,
counts, norms, maxima, read from tensors on their device while they are fresh (an activation
inside its forward hook, before a following in-place op can overwrite it; a gradient at the
optimizer step). Ratios are formed only at the end, which is what lets several calls,
micro-batches, steps of a window and ranks be combined exactly. How each kind combines is
written once, in `KINDS`: the `StepAccumulator` and `StepValues` fold a window with it, and
`gradscope.distributed` combines ranks with it.

A `StepAccumulator` reduces each tensor to 0-d tensors that are queued, never read. At the end
of a recorded step `flush()` stacks every queued value into one tensor, copies it to the host
once, and `StepValues` turns the folded values into statistics. On a GPU, `flush_later()`
queues that copy non-blocking into page-locked memory instead (`PendingValues`), to be read at
a later step, so the training thread never waits for the GPU.

A new statistic touches: its definition (`statdefs.STATS`), a row in `KINDS` for each new raw
kind it needs, the line of the accumulator that takes it, and the line of `StepValues` that
forms it. Ranks and windows need nothing more.
"""

from __future__ import annotations

import copy
import functools
import math
from collections import defaultdict
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from typing import Any, Callable, Optional, Protocol

import torch

from .record import Value

_F32 = torch.float32


class Fold(Enum):
    """How values of one kind combine: across calls, micro-batches, steps of a window, ranks."""

    SUM = "sum"
    SUM_OF_SQUARES = "sum of squares"  # the value is a norm: its square adds up (kept squared)
    MAX = "max"
    FIRST = "first"  # the same value wherever it is read: one is kept
    AGREED = "agreed"  # the same value everywhere, or undefined (a host counter: -1 / None)

    def prepare(self, value: float) -> float:
        return value * value if self is Fold.SUM_OF_SQUARES else value

    def combine(self, folded: float, value: float) -> float:
        """Fold one more (prepared) value into what was folded so far."""
        if self is Fold.MAX:
            return max(folded, value)
        if self is Fold.FIRST:
            return folded
        if self is Fold.AGREED:
            return folded if folded == value else -1.0
        return folded + value

    def reduce(self, rows: torch.Tensor) -> torch.Tensor:
        """Fold prepared values along dim 0 (one row per rank), column by column."""
        if self is Fold.MAX:
            return rows.max(0).values
        if self is Fold.FIRST:
            return rows[0]
        if self is Fold.AGREED:
            high, low = rows.max(0).values, rows.min(0).values
            return torch.where(high == low, high, torch.full_like(high, -1.0))
        return rows.sum(0)


class Scope(Enum):
    """What one measured value belongs to, which decides how ranks combine it."""

    LAYER = "layer"  # a module's outputs or their gradients: each rank measured its own samples
    PARAMETER = "parameter"  # a parameter at the step: ranks holding the same piece read the same values
    STEP = "step"  # the whole step, the same on every rank
    RANK = "rank"  # one value per rank, kept apart (the spread across ranks)


@dataclass(frozen=True)
class MeasuredKind:
    name: str
    scope: Scope
    fold: Fold
    meaning: str
    # DDP and FSDP average the ranks' gradients, so each rank's measurement counts 1/world.
    rank_averaged: bool = False

    def across_ranks(self, replicas: int, world: int) -> tuple[Fold, float]:
        """The fold over all ranks' (prepared) values, and the factor applied to its result.

        `replicas`: how many ranks hold the same piece of the parameter (world for a replicated
        DDP parameter, 1 for an FSDP2 shard); those ranks read the same values, counted once.
        """
        if self.scope is Scope.STEP or (self.scope is Scope.PARAMETER and replicas >= world):
            return Fold.FIRST, 1.0
        additive = self.fold in (Fold.SUM, Fold.SUM_OF_SQUARES)
        if self.scope is Scope.PARAMETER:
            return self.fold, 1.0 / replicas if additive else 1.0
        if self.rank_averaged and additive:
            return self.fold, 1.0 / (world * world) if self.fold is Fold.SUM_OF_SQUARES else 1.0 / world
        return self.fold, 1.0


_SAMPLED = "on the sample (see SAMPLING_NOTE)"
KINDS: tuple[MeasuredKind, ...] = (
    MeasuredKind("act_sum", Scope.LAYER, Fold.SUM, "sum of the output entries"),
    MeasuredKind("act_sample_sum", Scope.LAYER, Fold.SUM, f"sum of the output entries {_SAMPLED}"),
    MeasuredKind("act_norm", Scope.LAYER, Fold.SUM_OF_SQUARES, f"L2 norm of the output {_SAMPLED}"),
    MeasuredKind("act_nonzero", Scope.LAYER, Fold.SUM, f"nonzero output entries {_SAMPLED}"),
    MeasuredKind("act_saturated", Scope.LAYER, Fold.SUM, f"output entries in the flat region {_SAMPLED}"),
    MeasuredKind("unit_activity", Scope.LAYER, Fold.SUM, "per unit: a value that is 0 exactly when the unit was"
                 " silent (a vector; dead units are counted at the copy)"),
    MeasuredKind("backprop_norm", Scope.LAYER, Fold.SUM_OF_SQUARES, "L2 norm of dLoss/d(output)", rank_averaged=True),
    MeasuredKind("grad_norm", Scope.PARAMETER, Fold.SUM_OF_SQUARES, "L2 norm of the gradient"),
    MeasuredKind("grad_norm_preclip", Scope.PARAMETER, Fold.SUM_OF_SQUARES,
                 "L2 norm of the gradient at the end of the step's last backward, before any clipping"),
    MeasuredKind("weight_norm", Scope.PARAMETER, Fold.SUM_OF_SQUARES, "L2 norm of the weights before the step"),
    MeasuredKind("update_norm", Scope.PARAMETER, Fold.SUM_OF_SQUARES, f"L2 norm of the weight change {_SAMPLED}"),
    MeasuredKind("grad_l1", Scope.PARAMETER, Fold.SUM, f"sum of |gradient| {_SAMPLED}"),
    MeasuredKind("grad_nonzero", Scope.PARAMETER, Fold.SUM, f"nonzero gradient entries {_SAMPLED}"),
    MeasuredKind("grad_absmax", Scope.PARAMETER, Fold.MAX, "largest absolute gradient entry"),
    MeasuredKind("loss_scale", Scope.STEP, Fold.FIRST, "GradScaler's loss scale of the step"),
    MeasuredKind("rank_grad_norm", Scope.RANK, Fold.SUM_OF_SQUARES, "this rank's gradient norm before DDP averaged it"),
)
KINDS_BY_NAME: dict[str, MeasuredKind] = {k.name: k for k in KINDS}
# The fold of each kind that is folded into StepValues.folded (rank kinds are kept per rank).
_FOLD_OF = {k.name: k.fold for k in KINDS if k.scope is not Scope.RANK}


def _counter(across_ranks: Fold, default: Any = 0) -> Any:
    return field(default=default, metadata={"across_ranks": across_ranks})


@dataclass
class LayerCounters:
    """Host-side counters of one module's outputs since the last recorded step.

    Within a process they are counted by the accumulator; across ranks each folds as its field
    says. They travel between ranks as floats in field order (units None as -1).
    """

    calls: int = _counter(Fold.MAX)  # per rank, like a single process that trained on the whole batch
    numel: int = _counter(Fold.SUM)
    batch: int = _counter(Fold.SUM)
    eval_calls: int = _counter(Fold.MAX)
    sampled: int = _counter(Fold.SUM)  # entries in the samples behind sparsity, saturation and std
    units: Optional[int] = _counter(Fold.AGREED)  # 0: not seen yet; None: no unit axis, or calls disagreed
    saturating: bool = _counter(Fold.MAX, default=False)

    def encode(self) -> list[float]:
        return [-1.0 if value is None else float(value) for value in (getattr(self, f.name) for f in _LAYER_FIELDS)]

    @classmethod
    def decode(cls, values: list[float]) -> "LayerCounters":
        counters = {f.name: int(v) for f, v in zip(_LAYER_FIELDS, values)}
        counters["units"] = None if counters["units"] < 0 else counters["units"]
        counters["saturating"] = bool(counters["saturating"])
        return cls(**counters)

    @classmethod
    def combine_ranks(cls, rows: torch.Tensor) -> list["LayerCounters"]:
        """rows: (ranks, layers, fields) of encoded counters -> each layer's counters over all ranks."""
        columns = [f.metadata["across_ranks"].reduce(rows[..., i]) for i, f in enumerate(_LAYER_FIELDS)]
        return [cls.decode(layer) for layer in torch.stack(columns, -1).tolist()]


_LAYER_FIELDS = fields(LayerCounters)
LAYER_COUNTER_WIDTH = len(_LAYER_FIELDS)


@dataclass
class ParamCounters:
    """Sizes of one parameter's gradient (this rank's shard under FSDP2) and of its sample."""

    numel: int
    sampled: int


class RankCombiner(Protocol):
    """Combines every rank's measurements of a window (see gradscope.distributed)."""

    def combine(self, measured: "Measurements") -> "StepValues": ...

    def count_nonfinite(self, names: list[str], local_counts: torch.Tensor) -> list[float]: ...


# Counting on a CPU (`count_nonzero`, comparisons, `abs`) costs 10-30x a fused sum or norm, so
# counts and |g| sums of large tensors are taken on a sample of slices that are contiguous in
# memory. For an activation the slices are every k-th row (the entries along the last dimension:
# one token's features, one row of a feature map) across the whole output, so ACTIVATION_SAMPLE
# entries suffice and the sample stays that small however short the batch; for a weight they are
# every k-th output unit, whose gradient scales differ, so PARAMETER_SAMPLE entries (more units)
# are taken. Tensors up to twice the sample size are always counted in full. The statistics this
# affects say so in statdefs and in every record's meta.notes.
ACTIVATION_SAMPLE = 1 << 12
PARAMETER_SAMPLE = 1 << 15
SAMPLING_NOTE = (
    f"act_std, act_sparsity and act_saturation of outputs with more than {2 * ACTIVATION_SAMPLE} entries, and "
    f"grad_mean_abs, grad_zero_frac and update_ratio of parameters with more than {2 * PARAMETER_SAMPLE} entries, "
    f"are estimated on every k-th row of the output (the entries along its last dimension) and every k-th output "
    f"unit of the parameter, about {ACTIVATION_SAMPLE} and {PARAMETER_SAMPLE} entries; all other statistics are exact."
)


@functools.lru_cache(maxsize=4096)  # a handful of shapes, asked for on every call of every hook
def sample_step(shape: tuple[int, ...], size: int) -> int:
    """k for `sample`: 1 (everything) for tensors up to twice `size` entries."""
    numel = math.prod(shape)
    if numel <= 2 * size or not shape:
        return 1
    return min(-(-numel // size), shape[0])


def sample(t: torch.Tensor, size: int) -> torch.Tensor:
    """Every k-th slice along dim 0: a view whose slices are contiguous, so it reads fast."""
    k = sample_step(t.shape, size)
    return t if k == 1 else t[::k]


def sample_rows(t: torch.Tensor, size: int) -> torch.Tensor:
    """An activation's sample: every k-th row of `t` seen as (entries / last dim, last dim) when it
    is contiguous (rows from every sample of the batch, so ~`size` entries even for a batch of a
    few long sequences), else every k-th slice along dim 0; `t` itself when it is small."""
    if t.dim() > 2 and t.numel() > 2 * size and t.is_contiguous():
        rows = t.view(-1, t.shape[-1])
        k = sample_step(tuple(rows.shape), size)
        return t if k == 1 else rows[::k]
    return sample(t, size)


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
        # dtype= only where it converts: on a float32 tensor it doubles the cost of a small sum
        return flat.sum(0) if t.dtype == _F32 else flat.sum(0, dtype=_F32)
    if unit_dim == 1:  # (N, C, *spatial), contiguous: reduce the contiguous spatial block first
        return t.reshape(t.shape[0], t.shape[1], -1).sum(-1, dtype=_F32).sum(0)
    return t.sum([d for d in range(t.dim()) if d != unit_dim], dtype=_F32)


def per_unit_peak(t: torch.Tensor, unit_dim: int) -> torch.Tensor:
    """hypot(max, min) per unit: 0 exactly when every entry of the unit is 0 (one op where
    |max| + |min| takes three: on a GPU each op is a kernel launch per layer and call)."""
    flat = _units_2d(t, unit_dim)
    if flat is not None:
        high, low = flat.amax(0), flat.amin(0)
    elif unit_dim == 1:  # (N, C, *spatial); aminmax(dim=-1) is several times slower than these two
        blocks = t.reshape(t.shape[0], t.shape[1], -1)
        high, low = blocks.amax(-1).amax(0), blocks.amin(-1).amin(0)
    else:
        dims = [d for d in range(t.dim()) if d != unit_dim]
        high, low = t.amax(dims), t.amin(dims)
    return torch.hypot(high.float(), low.float())  # overflow-safe, and nonzero for subnormals


# Staged activation samples are reduced once this many entries wait (1 MiB of float32), so the
# copies add little to a step's peak memory however many outputs it has.
_MAX_STAGED = 1 << 18
# Samples up to this size are copied and reduced in groups (4x faster than four small ops each on
# a CPU); a larger one (the batch is too short to subsample: 8 sequences of 64x512) is reduced where
# it is, since copying it twice costs more than the ops it saves.
_STAGED_UP_TO = 4 * ACTIVATION_SAMPLE


@dataclass
class StepAccumulator:
    """Everything measured since the last recorded step, still on the device."""

    # (key, 0-d tensor) in queue order; keys are (kind, name) pairs
    queued_keys: list[tuple[str, str]] = field(default_factory=list)
    queued: list[torch.Tensor] = field(default_factory=list)
    # values reduced several layers at a time: (keys, 1-d tensor of one value per key), never split
    queued_vectors: list[tuple[list[tuple[str, str]], torch.Tensor]] = field(default_factory=list)
    # per layer: peak |output| per unit summed over calls, 0 exactly for units that were always 0
    per_unit: dict[str, torch.Tensor] = field(default_factory=dict)
    layers: dict[str, LayerCounters] = field(default_factory=lambda: defaultdict(LayerCounters))
    params: dict[str, ParamCounters] = field(default_factory=dict)
    params_with_grad: list[str] = field(default_factory=list)
    # activation samples copied in forward hooks, reduced in groups (see _reduce_samples), by
    # (size, dtype, device, saturation counter): (layer, flat sample, only part of the output)
    samples: dict[tuple, list[tuple[str, torch.Tensor, bool]]] = field(default_factory=lambda: defaultdict(list))
    _staged: int = 0  # entries in `samples`
    # tensors needed for the follow-up count of non-finite gradient entries (rare path)
    grads_for_nonfinite: dict[str, torch.Tensor] = field(default_factory=dict)
    # gradient norms at the end of the latest backward: queued with the gradients the optimizer reads
    preclip_norms: dict[str, torch.Tensor] = field(default_factory=dict)

    def queue(self, kind: str, name: str, value: torch.Tensor) -> None:
        """A 0-d device tensor measuring `kind` (a row of KINDS) of the layer or parameter `name`."""
        self.queued_keys.append((kind, name))
        self.queued.append(value)

    def queue_vector(self, kind: str, names: list[str], values: torch.Tensor) -> None:
        """A 1-d tensor holding `kind` of each name in turn (a batched reduction's result)."""
        self.queued_vectors.append(([(kind, n) for n in names], values))

    def queue_each(self, kind: str, names: list[str], values: list[torch.Tensor]) -> None:
        """One 0-d tensor per name (a multi-tensor op's results), queued in one go."""
        self.queued_keys.extend([(kind, n) for n in names])
        self.queued.extend(values)

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
        # second pass over a large output costs more than everything else here together. The
        # sample is copied now (a later in-place op may change the output) and reduced with the
        # same-sized samples of other layers in a few ops (`_reduce_samples`), not four per layer.
        part = sample_rows(out, ACTIVATION_SAMPLE)
        window.sampled += part.numel()
        if part is out:
            self.queue("act_sample_sum", name, total)
        if count_saturated is not None:
            window.saturating = True
        if part.numel() > _STAGED_UP_TO:  # a sample this large reads faster where it is than copied
            self._reduce_rows([name], part.unsqueeze(0), [part is not out], count_saturated)
            return
        key = (part.numel(), part.dtype, part.device, count_saturated)
        # one copy, contiguous, also of a strided sample (reshape would copy it once more)
        self.samples[key].append((name, part.clone(memory_format=torch.contiguous_format).view(-1), part is not out))
        self._staged += part.numel()
        if self._staged >= _MAX_STAGED:
            self._reduce_samples()

    def _reduce_samples(self) -> None:
        """The staged activation samples, each group of same-sized ones stacked and reduced per row."""
        for (_, _, _, count_saturated), staged in self.samples.items():
            rows = torch.stack([part for _, part, _ in staged])
            self._reduce_rows([name for name, _, _ in staged], rows, [sampled for _, _, sampled in staged], count_saturated)
        self.samples = defaultdict(list)
        self._staged = 0

    def _reduce_rows(
        self,
        names: list[str],
        rows: torch.Tensor,
        sampled: list[bool],
        count_saturated: Optional[Callable[[torch.Tensor], torch.Tensor]],
    ) -> None:
        """Sample statistics of each layer's sample, one per row of `rows` (reduced over every other
        dimension); `sampled`: the row is part of the output (its sum is not the output's)."""
        dims = tuple(range(1, rows.dim()))
        if any(sampled):
            # Every row is summed and the sampled ones stacked: picking rows by a list of positions
            # would copy the list to the device first, which on a GPU waits for the stream.
            sums = rows.sum(dims, dtype=_F32)
            if not all(sampled):
                sums = torch.stack([sums[i] for i, part in enumerate(sampled) if part])
            self.queue_vector("act_sample_sum", [n for n, part in zip(names, sampled) if part], sums)
        self.queue_vector("act_norm", names, torch.linalg.vector_norm(rows, dim=dims, dtype=_F32))
        # |sign| summed: on a CPU several times faster than count_nonzero along a dimension
        self.queue_vector("act_nonzero", names, rows.sign().abs_().sum(dims, dtype=_F32))
        if count_saturated is not None:
            self.queue_vector("act_saturated", names, count_saturated(rows))

    def add_unit_activity(self, name: str, output: torch.Tensor, unit_dim: int, nonnegative: bool) -> None:
        """Between recorded steps only the dead-unit bookkeeping runs: a unit is dead only if it
        stayed silent for every batch since the previous recorded step."""
        out = output.detach()
        if out.dim() < 2 or out.numel() == 0:
            return
        window = self.layers[name]
        peak = per_unit_sum(out, unit_dim) if nonnegative else per_unit_peak(out, unit_dim)
        self._track_units(name, window, peak)

    def _track_units(self, name: str, window: LayerCounters, peak: torch.Tensor) -> None:
        units = peak.numel()
        if window.units == 0:
            window.units = units
        elif window.units != units:
            window.units = None  # a reused module saw different widths: dead units are undefined
        if window.units is not None:
            running = self.per_unit.get(name)
            if running is None:
                self.per_unit[name] = peak  # a fresh tensor of ours: later calls add into it
            else:
                running.add_(peak)

    def add_eval_call(self, name: str) -> None:
        self.layers[name].eval_calls += 1

    # ---- backprop signal (inside the tensor hook on a module's output) --------------------
    def add_backprop(self, name: str, grad: torch.Tensor) -> None:
        self.queue("backprop_norm", name, torch.linalg.vector_norm(grad.detach(), dtype=_F32))

    # ---- gradients and weights (at the optimizer step) ------------------------------------
    def add_backward_end_gradients(self, named: list[tuple[str, torch.Tensor]]) -> None:
        """The gradients as a backward left them, before clipping (or unscaling) can change them.
        Each backward replaces the previous one's norms: the last backward of the step counts."""
        if named:
            norms = torch._foreach_norm([_dense(g) for _, g in named], 2, dtype=_F32)
            self.preclip_norms = dict(zip((n for n, _ in named), norms))

    def add_gradients(self, named: list[tuple[str, torch.Tensor]], weights: list[torch.Tensor]) -> None:
        """All parameters' gradients at once: fused multi-tensor norms, small ops on samples."""
        if not named:
            return
        names = [n for n, _ in named]
        grads = [_dense(g) for _, g in named]
        self.params_with_grad.extend(names)
        for n in names:
            if n in self.preclip_norms:
                self.queue("grad_norm_preclip", n, self.preclip_norms[n])
        self.preclip_norms = {}
        samples = [sample(g, PARAMETER_SAMPLE) for g in grads]
        for n, g, part in zip(names, grads, samples):
            self.params[n] = ParamCounters(numel=g.numel(), sampled=part.numel())
        for kind, values in (
            ("grad_norm", torch._foreach_norm(grads, 2, dtype=_F32)),
            ("weight_norm", torch._foreach_norm([_dense(w.detach()) for w in weights], 2, dtype=_F32)),
            ("grad_l1", _abs_sums(samples)),
            ("grad_nonzero", _nonzero_counts(samples)),
        ):
            self.queue_each(kind, names, values)
        self.queue_vector("grad_absmax", names, _abs_maxima(grads))
        self.grads_for_nonfinite = dict(zip(names, grads))

    def add_local_gradient_norm(self, norms: list[torch.Tensor]) -> None:
        """This rank's own gradient norm before DDP averaged it (one value per rank)."""
        if norms:
            self.queue("rank_grad_norm", "", torch.linalg.vector_norm(torch.stack(norms)))

    def add_updates(self, names: list[str], deltas: list[torch.Tensor]) -> None:
        """Norms of (sampled) weight changes; `deltas` are taken on the slices `sample` picks."""
        if names:
            self.queue_each("update_norm", names, torch._foreach_norm(deltas, 2, dtype=_F32))

    # ---- window bookkeeping -----------------------------------------------------------------
    def copy(self) -> "StepAccumulator":
        """The window so far with containers and counters of its own (queued tensors shared; the
        per-unit activity, which later calls add into, copied): what a step that turns out to be
        no step (its gradients discarded, see capture.clock) rolls back to."""

        def own(value: Any) -> Any:
            if isinstance(value, dict):
                copied = copy.copy(value)  # a defaultdict keeps its factory
                copied.update({key: own(item) for key, item in value.items()})
                return copied
            if isinstance(value, list):
                return list(value)
            return value if isinstance(value, torch.Tensor) else copy.copy(value)

        copied = StepAccumulator(**{f.name: own(getattr(self, f.name)) for f in fields(self)})
        copied.per_unit = {name: activity.clone() for name, activity in self.per_unit.items()}  # added into in place
        return copied

    def measurements(self) -> "Measurements":
        """Everything measured in the window, still on the device (one rank's share under DDP/FSDP)."""
        if self.samples:
            self._reduce_samples()
        keys: list[tuple[str, str]] = []
        chunks: list[torch.Tensor] = []
        if self.queued:
            keys.extend(self.queued_keys)
            chunks.append(_stack(self.queued))
        for vector_keys, vector in self.queued_vectors:
            keys.extend(vector_keys)
            chunks.append(vector)
        unit_activity = {}
        for name, activity in self.per_unit.items():
            if self.layers[name].units is not None:
                unit_activity[name] = activity
        return Measurements(
            keys=keys,
            chunks=chunks,
            unit_activity=unit_activity,
            layers=dict(self.layers),
            params=dict(self.params),
            params_with_grad=list(self.params_with_grad),
        )

    def flush(self, ranks: Optional[RankCombiner] = None) -> "StepValues":
        """One device-to-host copy for everything measured in the window; with `ranks`, one
        collective that combines every rank's measurements into those of the global batch."""
        measured = self.measurements()
        values = measured.to_host() if ranks is None else ranks.combine(measured)
        self._count_nonfinite(values, ranks)
        return values

    def flush_later(self, buffers: "HostBuffers") -> "PendingValues":
        """As `flush()` for one process, without waiting: the copy is queued behind the step's
        kernels and read (`PendingValues.values`) once they have long finished.

        Whether a gradient's non-finite entries must be counted is known only from the copy, by
        when the gradients are gone: here they are counted on the device for every gradient, in
        the same copy. No device tensor of the window outlives this call."""
        measured = self.measurements()
        if self.grads_for_nonfinite:
            measured.keys.extend((_NONFINITE_COUNT, n) for n in self.grads_for_nonfinite)
            measured.chunks.append(_stack(count_nonfinite(list(self.grads_for_nonfinite.values()))))
        return measured.copy_to_host(buffers)

    def _count_nonfinite(self, values: "StepValues", ranks: Optional[RankCombiner] = None) -> None:
        # Rare path, only on steps whose gradient norm is NaN/Inf: count the bad entries exactly.
        # Under DDP/FSDP every rank sees the same combined norms, so all of them take this path.
        bad = values.nonfinite_gradients()
        if not bad or (ranks is None and not self.grads_for_nonfinite):
            return
        local = [self.grads_for_nonfinite.get(n) for n in bad]
        found = iter(count_nonfinite([g for g in local if g is not None]))
        zero = torch.zeros((), dtype=torch.float64)  # a rank that holds no gradient of that parameter
        counts = _stack([next(found) if g is not None else zero for g in local])
        host = ranks.count_nonfinite(bad, counts) if ranks is not None else counts.tolist()
        for n, c in zip(bad, host):
            values.nonfinite[n] = float(c)


@dataclass
class Measurements:
    """One window as measured by this process: queued values still on the device, host counters."""

    keys: list[tuple[str, str]]  # (kind, name) of each entry of `chunks`, in order
    chunks: list[torch.Tensor]  # 1-d device tensors
    unit_activity: dict[str, torch.Tensor]  # per layer, summed over calls: 0 for a unit that was always 0
    layers: dict[str, LayerCounters]
    params: dict[str, ParamCounters]
    params_with_grad: list[str]

    def to_host(self) -> "StepValues":
        keys, flat = self._flat()
        return self._fold(keys, flat.tolist() if flat is not None else [])  # the one device-to-host copy

    def copy_to_host(self, buffers: "HostBuffers") -> "PendingValues":
        """Queue the one device-to-host copy of the window; on a GPU into page-locked memory with
        `non_blocking=True`, which returns at once (into pageable memory it would wait), and an
        event marks when it has landed. Elsewhere the copy is made now: it costs nothing to wait for."""
        keys, flat = self._flat()
        host_side = replace(self, keys=[], chunks=[], unit_activity={})  # no device tensor is kept
        return PendingValues(host_side, keys, HostCopy(flat, buffers) if flat is not None else None)

    def _flat(self) -> tuple[list[tuple[str, str]], Optional[torch.Tensor]]:
        """The keys, and every measured value in one vector on the device (None when nothing was)."""
        keys = list(self.keys)
        chunks = list(self.chunks)
        # Dead units are counted on the device (only the counts are copied), in one op for all
        # layers of a width: on a GPU each op is a launch per layer otherwise.
        by_width: dict[tuple, list[tuple[str, torch.Tensor]]] = defaultdict(list)
        for name, activity in self.unit_activity.items():
            by_width[(activity.numel(), activity.dtype, activity.device)].append((name, activity))
        for layers in by_width.values():
            keys.extend(("dead_units", name) for name, _ in layers)
            stacked = torch.stack([activity.reshape(-1) for _, activity in layers])
            chunks.append(stacked.eq(0).sum(1, dtype=_F32))
        if not chunks:
            return keys, None
        if len({c.device for c in chunks}) > 1:  # a model split over devices
            chunks = [c.to(chunks[0].device) for c in chunks]
        return keys, torch.cat(chunks)

    def _fold(self, keys: list[tuple[str, str]], numbers: list[float]) -> "StepValues":
        values = StepValues(layers=self.layers, params=self.params, params_with_grad=self.params_with_grad)
        folded = values.folded
        # The usual folds inlined: a step folds thousands of values, and this is the training thread.
        for (kind, name), value in zip(keys, numbers):
            fold = _FOLD_OF.get(kind)
            if fold is Fold.SUM:
                into = folded[kind]
                into[name] = into.get(name, 0.0) + value
            elif fold is Fold.SUM_OF_SQUARES:
                into = folded[kind]
                into[name] = into.get(name, 0.0) + value * value
            elif kind == "dead_units" or kind == _NONFINITE_COUNT:  # counted on the device
                folded[kind][name] = value
            else:
                values.add(kind, name, KINDS_BY_NAME[kind].fold.prepare(value))
        counts = folded.pop(_NONFINITE_COUNT, None)
        if counts is not None:
            for name in values.nonfinite_gradients():
                values.nonfinite[name] = counts.get(name, 0.0)
        return values


# Non-finite entries of a gradient, counted on the device for a copy read later (flush_later).
_NONFINITE_COUNT = "nonfinite_count"


class HostCopy:
    """A device vector on its way to host memory, without making the training thread wait: on a
    GPU copied `non_blocking` into a page-locked buffer of `buffers` (into pageable memory the copy
    would wait), with an event that marks when it has landed; elsewhere copied at once, which
    costs nothing to wait for. The buffer goes back to `buffers` once the numbers are read."""

    def __init__(self, values: torch.Tensor, buffers: "HostBuffers") -> None:
        on_gpu = values.device.type == "cuda"
        self._buffers = buffers
        self._host: Optional[torch.Tensor] = buffers.take(values.numel(), values.dtype, pinned=on_gpu)
        self._host.copy_(values.reshape(-1), non_blocking=on_gpu)
        self._event: Any = None
        if on_gpu:
            self._event = torch.cuda.Event()
            self._event.record(torch.cuda.current_stream(values.device))  # the stream the copy was queued on

    @property
    def pinned(self) -> bool:
        return self._host is not None and self._host.is_pinned()

    def ready(self) -> bool:
        """Has the copy landed? (asks the device; never waits)"""
        return self._event is None or self._event.query()

    def numbers(self) -> list[float]:
        """The values, read once; waits for the copy only if it has not landed."""
        if self._host is None:
            raise RuntimeError("HostCopy.numbers() was already read")
        if self._event is not None:
            self._event.synchronize()
        numbers, host, self._host = self._host.tolist(), self._host, None
        self._buffers.give_back(host)
        return numbers


class PendingValues:
    """A window's values on their way to the host: the host counters, the keys and the copy
    (maybe not landed yet); no device tensor."""

    def __init__(self, measured: Measurements, keys: list[tuple[str, str]], copy: Optional[HostCopy]) -> None:
        self._measured = measured
        self._keys = keys
        self._copy = copy  # None when nothing was measured

    @property
    def pinned(self) -> bool:
        return self._copy is not None and self._copy.pinned

    def ready(self) -> bool:
        """Has the copy landed? (asks the device; never waits)"""
        return self._copy is None or self._copy.ready()

    def values(self) -> StepValues:
        """The window's values; waits for the copy only if it has not landed (it has, usually, by
        the next recorded step)."""
        return self._measured._fold(self._keys, self._copy.numbers() if self._copy is not None else [])


class HostBuffers:
    """Host buffers that recorded steps' copies land in, reused by size and dtype: page-locking
    memory costs far more than the copy itself, and a step usually measures as many values as
    the step before. Only buffers handed back (their copy read) are reused."""

    def __init__(self, keep: int = 8) -> None:
        self._free: dict[tuple[int, torch.dtype, bool], list[torch.Tensor]] = defaultdict(list)
        self._keep = keep

    def take(self, numel: int, dtype: torch.dtype, pinned: bool) -> torch.Tensor:
        free = self._free.get((numel, dtype, pinned))
        if free:
            return free.pop()
        return torch.empty(numel, dtype=dtype, pin_memory=pinned)

    def give_back(self, buffer: torch.Tensor) -> None:
        key = (buffer.numel(), buffer.dtype, buffer.is_pinned())
        if sum(len(free) for free in self._free.values()) >= self._keep:
            self._free.clear()  # the sizes changed (another model, a growing window): start over
        self._free[key].append(buffer)


@dataclass
class StepValues:
    """The host copy of one window: each measured kind folded per name (norms kept squared)."""

    folded: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    layers: dict[str, LayerCounters] = field(default_factory=dict)
    params: dict[str, ParamCounters] = field(default_factory=dict)
    params_with_grad: list[str] = field(default_factory=list)
    nonfinite: dict[str, float] = field(default_factory=dict)
    per_rank: dict[str, list[float]] = field(default_factory=dict)  # Scope.RANK kinds, one value per rank

    def nonfinite_gradients(self) -> list[str]:
        """Parameters whose gradient norm is NaN or infinite: their non-finite entries are counted."""
        norms = self.folded["grad_norm"]
        return [n for n in self.params_with_grad if not math.isfinite(norms.get(n, 0.0))]

    def add(self, kind: str, name: str, prepared: float) -> None:
        """Fold one more (prepared: squared for norms) value of `kind` into the window."""
        measured = KINDS_BY_NAME[kind]
        if measured.scope is Scope.RANK:
            self.per_rank[kind] = [prepared]
            return
        folded = self.folded[kind]
        folded[name] = measured.fold.combine(folded[name], prepared) if name in folded else prepared

    @property
    def rank_grad_norms(self) -> list[float]:
        """DDP: each rank's gradient norm before averaging."""
        return [math.sqrt(v) for v in self.per_rank.get("rank_grad_norm", [])]

    # ---- statistics ---------------------------------------------------------------------------
    def activation_stats(self, name: str) -> dict[str, Value]:
        window = self.layers.get(name)
        if window is None:
            return {}
        stats: dict[str, Value] = {"act_eval_calls": float(window.eval_calls)}
        if window.calls == 0:
            return stats
        n = window.numel
        f = self.folded
        total = f["act_sum"].get(name)
        stats["act_calls"] = float(window.calls)
        stats["act_batch"] = window.batch / window.calls
        if n == 0 or total is None:
            return stats
        mean = total / n
        sampled = window.sampled
        # The spread is the sample's own (population) variance: using the exact mean with a
        # sampled mean square would cancel badly when the mean is large against the spread.
        sample_mean = f["act_sample_sum"][name] / sampled
        sample_mean_square = f["act_norm"][name] / sampled
        finite = math.isfinite(total) and math.isfinite(sample_mean_square)
        stats["act_sparsity"] = 1.0 - f["act_nonzero"][name] / sampled
        stats["act_mean"] = mean
        stats["act_std"] = math.sqrt(max(sample_mean_square - sample_mean**2, 0.0)) if finite else math.nan
        stats["act_nonfinite"] = 0.0 if finite else 1.0
        if window.saturating:
            stats["act_saturation"] = f["act_saturated"][name] / sampled
        dead = f["dead_units"].get(name)
        if dead is not None and window.units:
            stats["act_dead_frac"] = dead / window.units
        return stats

    def backprop_stats(self, name: str) -> dict[str, Value]:
        squares = self.folded["backprop_norm"].get(name)
        if squares is None:
            return {}
        scale = self.folded["loss_scale"].get("", 1.0)  # GradScaler's factor, when the Watcher knows it
        return {"backprop_norm": math.sqrt(squares) / scale}

    def gradient_stats(self, param_names: list[str]) -> dict[str, Value]:
        """Statistics over the given parameters together (one parameter, or a module's)."""
        f = self.folded
        names = [n for n in param_names if n in f["grad_norm"]]
        if not names:
            return {}
        numel = sum(self.params[n].numel for n in names)
        grad_sq = sum(f["grad_norm"][n] for n in names)
        weight_sq = sum(f["weight_norm"][n] for n in names)
        # Sampled sums are scaled up to the whole parameter before parameters are combined.
        scale = {n: self.params[n].numel / self.params[n].sampled for n in names}
        stats: dict[str, Value] = {
            "grad_norm": math.sqrt(grad_sq),
            "grad_rms": math.sqrt(grad_sq / numel) if numel else None,
            "grad_mean_abs": sum(f["grad_l1"][n] * scale[n] for n in names) / numel if numel else None,
            "grad_max": max(f["grad_absmax"][n] for n in names),
            "grad_nonfinite": sum(self.nonfinite.get(n, 0.0) for n in names),
            "grad_zero_frac": 1.0 - sum(f["grad_nonzero"][n] * scale[n] for n in names) / numel if numel else None,
            "weight_norm": math.sqrt(weight_sq),
        }
        if all(n in f["grad_norm_preclip"] for n in names):
            # Read before GradScaler.unscale_: divided by the loss scale when the Watcher knows it.
            preclip = math.sqrt(sum(f["grad_norm_preclip"][n] for n in names)) / f["loss_scale"].get("", 1.0)
            stats["grad_norm_preclip"] = preclip
            stats["clip_factor"] = stats["grad_norm"] / preclip if preclip > 0 else None
        if all(n in f["update_norm"] for n in names):
            update_sq = sum(f["update_norm"][n] * scale[n] for n in names)
            stats["update_ratio"] = math.sqrt(update_sq) / math.sqrt(weight_sq) if weight_sq > 0 else None
        return stats


# On a CPU the multi-tensor 1- and 0-norms are slow on large tensors (a 32768-entry sample: 70 and 80 us,
# against 35 us for abs().sum() and 50 us for count_nonzero) but save a call per tensor on small ones.
_FOREACH_UP_TO = 4096


def _by_size(tensors: list[torch.Tensor], small: Callable[[list[torch.Tensor]], list[torch.Tensor]],
             large: Callable[[torch.Tensor], torch.Tensor]) -> list[torch.Tensor]:
    """`small` on the small tensors at once, `large` on each large one; results in input order."""
    results: list[Optional[torch.Tensor]] = [large(t) if t.numel() > _FOREACH_UP_TO else None for t in tensors]
    at = [i for i, result in enumerate(results) if result is None]
    if at:
        for i, value in zip(at, small([tensors[i] for i in at])):
            results[i] = value
    return results  # type: ignore[return-value]


def _abs_sums(samples: list[torch.Tensor], fused: Optional[bool] = None) -> list[torch.Tensor]:
    """sum |x| of each tensor, as float32."""
    if _fused(samples, fused):
        return list(torch._foreach_norm(samples, 1, dtype=_F32))
    return _by_size(samples, lambda ts: torch._foreach_norm(ts, 1, dtype=_F32), lambda t: t.abs().sum(dtype=_F32))


def _nonzero_counts(samples: list[torch.Tensor], fused: Optional[bool] = None) -> list[torch.Tensor]:
    """Number of nonzero entries of each tensor (float32 for small ones, int64 for large: both stack)."""
    if _fused(samples, fused):
        return list(torch._foreach_norm(samples, 0, dtype=_F32))
    return _by_size(samples, lambda ts: torch._foreach_norm(ts, 0, dtype=_F32), torch.count_nonzero)


def _abs_maxima(grads: list[torch.Tensor], fused: Optional[bool] = None) -> torch.Tensor:
    """max |g| of each tensor, as one float32 vector; 0 for an empty one (an empty FSDP shard on
    this rank: the neutral element of MAX over absolute values). Stacked with `_stack`: a model
    may be split over devices."""
    full = [g for g in grads if g.numel()]
    if not full:
        return torch.zeros(len(grads), dtype=_F32, device=grads[0].device)
    if _fused(full, fused):
        maxima = _stack(list(torch._foreach_norm(full, math.inf, dtype=_F32)))
    else:
        # aminmax: one pass with no temporary (unlike abs().max()), and on a CPU much faster than
        # the inf-norm; the extremes of all tensors are then compared in a few ops, not two a tensor.
        extremes = [torch.aminmax(g) for g in full]
        lows, highs = _stack([e.min for e in extremes]), _stack([e.max for e in extremes])
        maxima = torch.maximum(highs.float(), lows.float().neg_())
    if len(full) == len(grads):
        return maxima
    zero = torch.zeros((), dtype=_F32, device=maxima.device)  # only with empty shards: off the usual path
    found = iter(maxima.unbind())
    return _stack([next(found) if g.numel() else zero for g in grads])


def _fused(tensors: list[torch.Tensor], fused: Optional[bool]) -> bool:
    """Multi-tensor (one-kernel) reductions on an accelerator, where each op is a kernel launch;
    on a CPU the per-tensor ops where they are faster (`fused`: force either, for tests)."""
    return fused if fused is not None else tensors[0].device.type != "cpu"


def _dense(t: torch.Tensor) -> torch.Tensor:
    if t.is_sparse:
        # Statistics of the stored entries of a sparse gradient; coalescing sizes its result on
        # the host, so on a GPU it waits for the gradient (sparse gradients only).
        return t.coalesce()._values()
    return t


def _stack(values: list[torch.Tensor]) -> torch.Tensor:
    """Stack 0-d tensors (dtypes are promoted) into one vector."""
    try:
        return torch.stack(values)
    except RuntimeError:
        # A model split over devices: move the (tiny) values to one device first.
        target = values[0].device
        return torch.stack([v.to(target) for v in values])


def count_nonfinite(grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """The number of NaN and infinite entries of each tensor, on its device (0-d float64 each).

    g * 0 is NaN exactly where g is not finite, and the 0-"norm" counts what is not 0: two
    multi-tensor passes, no per-tensor comparisons. The products are temporaries, made a
    bounded group of tensors at a time."""
    counts: list[torch.Tensor] = []
    group: list[torch.Tensor] = []
    size = 0
    for g in grads + [None]:  # type: ignore[list-item]
        if group and (g is None or size + g.numel() * g.element_size() > _NONFINITE_GROUP_BYTES):
            counts.extend(torch._foreach_norm(torch._foreach_mul(group, 0.0), 0, dtype=torch.float64))
            group, size = [], 0
        if g is not None:
            group.append(g)
            size += g.numel() * g.element_size()
    return counts


_NONFINITE_GROUP_BYTES = 64 << 20
