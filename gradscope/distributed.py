"""Statistics of the model being trained when it is trained by several processes (DDP, FSDP2).

Each rank measures its own share: activations of its part of the global batch, and the
gradients at the optimizer step, which under DDP are already all-reduced (the same on every
rank) and under FSDP2 are this rank's shard of each parameter. At the end of a recorded step
every rank sends its raw sums, counts, maxima and per-unit peaks to every other rank in ONE
`all_gather` (hooks never communicate), and each rank combines them on the host:

- activation sums and counts add up; a unit is dead only if its peak is 0 on every rank;
  `act_calls` is the calls per rank and `act_batch` the global batch per call, as in a
  single process that trained on the whole batch;
- `backprop_norm` is that of the loss the gradients belong to: DDP and FSDP average the
  ranks' gradients, so dLoss/d(output) is each rank's own gradient divided by the world
  size, and the global norm is sqrt(sum over ranks of squared norms) / world size;
- per parameter, with R = how many ranks hold the same piece of it (R = world size for a
  replicated DDP parameter, 1 for an FSDP2 shard, the replicate size under HSDP): sums of
  squares, |g| sums, nonzero counts and numel are summed over ranks and divided by R,
  maxima are MAXed and minima MINed; a replicated parameter simply takes rank 0's values.

Under DDP each rank also measures the norm of its own gradient before DDP averages it (in the
post-accumulate-grad hook, which runs before DDP's); the record logs the largest and smallest
of them per step as the scalars `grad_norm_rank_max` / `grad_norm_rank_min`: a wide spread
means the ranks' data differ (imbalanced shards, a rank with outliers).

The layout of the exchanged vector (what each entry is) is agreed on the first recorded step
with `all_gather_object`; afterwards each step is one `all_gather` of a float64 vector whose
first entry is a fingerprint of the sender's layout. If any rank measured something else (a
data-dependent branch), every rank sees it in the gathered fingerprints and the step falls back
to exchanging layouts too, so no rank can wait for a collective the others skip.

All ranks must watch the model (the collective needs every rank); only rank 0 keeps the
per-step statistics (see `Watcher.is_main_process` and `Watcher.save`).
"""

from __future__ import annotations

import zlib
from typing import Any, Iterable, Optional

import torch
from torch import nn

from .measure import (
    KINDS_BY_NAME,
    LAYER_COUNTER_WIDTH,
    Fold,
    LayerCounters,
    Measurements,
    ParamCounters,
    Scope,
    StepValues,
)

_MISMATCH = -1.0  # header of a rank whose measurements do not have the agreed layout


def _dtensor_type() -> Optional[type]:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed support
        return None
    return DTensor


def is_sharded(tensor: torch.Tensor) -> bool:
    """True for an FSDP2 (DTensor) parameter or gradient."""
    dtensor = _dtensor_type()
    return dtensor is not None and isinstance(tensor, dtensor)


def local_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's piece of a DTensor (its storage, so in-place updates show), or the tensor itself."""
    local = getattr(tensor, "_local_tensor", None)
    return local if isinstance(local, torch.Tensor) else tensor


def replication_factor(param: torch.Tensor, world: int) -> int:
    """How many ranks hold the same piece of `param`: `world` for a plain (DDP) parameter."""
    dtensor = _dtensor_type()
    if dtensor is None or not isinstance(param, dtensor):
        return world
    shards = 1
    for dim, placement in enumerate(param.placements):
        if placement.is_shard():
            shards *= param.device_mesh.size(dim)
    return max(world // shards, 1)


def is_data_parallel(model: nn.Module) -> bool:
    """DDP-wrapped, or sharded with FSDP2 (its parameters are DTensors)."""
    if type(model).__name__ in {"DistributedDataParallel", "FullyShardedDataParallel"}:
        return True
    inner = getattr(model, "_orig_mod", None)  # torch.compile(ddp_model)
    if isinstance(inner, nn.Module) and is_data_parallel(inner):
        return True
    return any(is_sharded(p) for p in model.parameters())


class RankCombiner:
    """Combines every rank's measurements of a recorded step with one collective."""

    def __init__(self, group: Any, params: Iterable[tuple[str, torch.Tensor]]) -> None:
        import torch.distributed as dist

        self._dist = dist
        self.group = group
        self.world = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.backend = str(dist.get_backend(group))
        self.replicas = {name: replication_factor(p, self.world) for name, p in params}
        self.sharded = any(r < self.world for r in self.replicas.values())
        self._agreed: Optional[tuple[float, int]] = None  # (fingerprint, length) every rank sent last time
        self.collectives = 0  # collectives issued, for tests and benchmarks
        self._last_layout: tuple = ()
        self._plan: Optional[_Plan] = None
        self._last_fingerprint = 0.0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---- the one exchange per recorded step ---------------------------------------------------
    def combine(self, measured: Measurements) -> StepValues:
        failure: Optional[Exception] = None
        try:
            layout, vector = self._encode(measured)
        except Exception as exc:  # noqa: BLE001 - this rank must still take part in the collective
            failure, layout, vector = exc, ("failed",), torch.zeros(0, dtype=torch.float64)
        rows = self._exchange(layout, vector)
        if failure is not None:
            raise failure
        if all(lay == layout for lay, _ in rows):  # the usual case: one vectorised pass
            return self._combine_aligned(layout, torch.stack([row for _, row in rows]))
        return self._decode_and_combine(rows)

    def count_nonfinite(self, names: list[str], local_counts: torch.Tensor) -> list[float]:
        """Non-finite gradient entries per parameter over all ranks (rare path: NaN/Inf norms)."""
        if not any(self.replicas.get(n, self.world) < self.world for n in names):
            return local_counts.tolist()  # replicated gradients: every rank counts the same entries
        counts = local_counts.to(self._transport_device())
        self._dist.all_reduce(counts, group=self.group)
        self.collectives += 1
        return [c / self.replicas.get(n, self.world) for n, c in zip(names, counts.tolist())]

    def _transport_device(self) -> torch.device:
        if self.backend == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def _encode(self, m: Measurements) -> tuple[tuple, torch.Tensor]:
        """Everything as one float64 vector, and the layout that says what each entry is."""
        device = self._transport_device()
        unit_names = list(m.unit_activity)
        measured = list(m.chunks) + [m.unit_activity[n] for n in unit_names]
        parts = []
        if measured:  # joined where they were measured, so a GPU run copies once to a gloo host
            home = measured[0].device
            joined = torch.cat([t.reshape(-1).to(home, torch.float64) for t in measured])
            parts.append(joined.to(device))
        layer_names = list(m.layers)
        params = list(m.params)
        counters = [value for name in layer_names for value in m.layers[name].encode()]
        counters += [float(size) for name in params for size in (m.params[name].numel, m.params[name].sampled)]
        parts.append(torch.tensor(counters, dtype=torch.float64, device=device))
        layout = (
            tuple(m.keys),
            tuple((n, m.unit_activity[n].numel()) for n in unit_names),
            tuple(layer_names),
            tuple(params),
            tuple(m.params_with_grad),
        )
        return layout, torch.cat(parts)

    def agree_max(self, value: int) -> int:
        """The largest of every rank's `value` (budget=: the ranks must record the same steps, so
        they take the longest recording interval any of them chose). One small collective, read
        back at once: with NCCL a wait for the queued kernels, twice per recording interval."""
        device = torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")
        tensor = torch.tensor([value], dtype=torch.int64, device=device)
        self._dist.all_reduce(tensor, op=self._dist.ReduceOp.MAX, group=self.group)
        self.collectives += 1
        return int(tensor.item())

    def _exchange(self, layout: tuple, vector: torch.Tensor) -> list[tuple[tuple, torch.Tensor]]:
        """Every rank's (layout, values). One all_gather while all ranks measure the same things
        (the usual case); when layouts differ (first step, data-dependent branches) a fallback
        that exchanges the layouts too. Every rank takes the same path: the decision depends only
        on what the collective returned, which is the same everywhere."""
        fingerprint = self._fingerprint(layout)
        if self._agreed is not None:
            agreed_fingerprint, length = self._agreed
            fits = fingerprint == agreed_fingerprint and vector.numel() == length
            header = torch.full((1,), fingerprint if fits else _MISMATCH, dtype=torch.float64, device=vector.device)
            body = vector if fits else torch.zeros(length, dtype=torch.float64, device=vector.device)
            sent = torch.cat([header, body])
            gathered = [torch.empty_like(sent) for _ in range(self.world)]
            self._dist.all_gather(gathered, sent, group=self.group)
            self.collectives += 1
            rows = torch.stack(gathered).cpu()  # the one device-to-host copy of the step
            if bool((rows[:, 0] == agreed_fingerprint).all()):
                return [(layout, row[1:]) for row in rows]
        objects: list[Any] = [None] * self.world
        self._dist.all_gather_object(objects, (fingerprint, layout, vector.cpu().tolist()), group=self.group)
        self.collectives += 1
        fingerprints = {f for f, _, _ in objects}
        lengths = {len(values) for _, _, values in objects}
        same = len(fingerprints) == 1 and len(lengths) == 1 and _MISMATCH not in fingerprints
        self._agreed = (fingerprint, vector.numel()) if same else None
        return [(lay, torch.tensor(values, dtype=torch.float64)) for _, lay, values in objects]

    def _fingerprint(self, layout: tuple) -> float:
        if layout != self._last_layout:  # a tuple comparison is much cheaper than repr + crc32
            self._last_layout, self._last_fingerprint = layout, float(zlib.crc32(repr(layout).encode()))
        return self._last_fingerprint

    # ---- combining on the host ---------------------------------------------------------------
    def _rule(self, kind: str, name: str) -> tuple[Fold, float]:
        return KINDS_BY_NAME[kind].across_ranks(self.replicas.get(name, self.world), self.world)

    def _combine_aligned(self, layout: tuple, rows: torch.Tensor) -> StepValues:
        """All ranks measured the same things in the same order: combine column by column."""
        keys, unit_segments, layer_names, params, params_with_grad = layout
        plan = self._plan_for(layout)
        n = len(keys)
        scalars = rows[:, :n].clone()
        scalars[:, plan.squared] = scalars[:, plan.squared].square()
        combined = scalars.sum(0)
        for fold, columns in plan.columns.items():
            combined[columns] = fold.reduce(scalars[:, columns])
        combined = (combined * plan.scale).tolist()
        values = StepValues()
        for column, (kind, name) in enumerate(keys):
            if column in plan.per_rank:
                values.per_rank[kind] = scalars[:, column].tolist()
            else:
                values.add(kind, name, combined[column])
        at = n
        for name, length in unit_segments:
            activity = rows[:, at : at + length].sum(0)
            values.folded["dead_units"][name] = float((activity == 0).sum())
            at += length
        width = LAYER_COUNTER_WIDTH
        counters = rows[:, at : at + width * len(layer_names)].reshape(self.world, len(layer_names), width)
        values.layers = dict(zip(layer_names, LayerCounters.combine_ranks(counters)))
        at += width * len(layer_names)
        sizes = rows[:, at : at + 2 * len(params)].reshape(self.world, len(params), 2)
        for name, per_rank in zip(params, sizes.unbind(1)):
            values.params[name] = self._param_counters(name, per_rank.tolist())
        values.params_with_grad = list(params_with_grad)
        return values

    def _param_counters(self, name: str, per_rank: list[list[float]]) -> ParamCounters:
        """Sizes of a parameter over all ranks: a replicated one's are rank 0's, shards' add up."""
        r = self.replicas.get(name, self.world)
        numel, sampled = per_rank[0] if r >= self.world else (sum(column) / r for column in zip(*per_rank))
        return ParamCounters(numel=int(round(numel)), sampled=int(round(sampled)))

    def _plan_for(self, layout: tuple) -> "_Plan":
        if self._plan is None or self._plan.layout is not layout and self._plan.layout != layout:
            self._plan = _Plan(layout, [self._rule(kind, name) for kind, name in layout[0]])
        return self._plan

    def _decode_and_combine(self, rows: list[tuple[tuple, torch.Tensor]]) -> StepValues:
        """Ranks measured different things: combine what each measured, key by key."""
        decoded = [_decode(layout, values) for layout, values in rows if layout and layout[0] != "failed"]
        values = StepValues()
        if not decoded:
            return values
        for key in _ordered_union([d.values for d in decoded]):
            kind, name = key
            present = [d.values[key] for d in decoded if key in d.values]
            if KINDS_BY_NAME[kind].scope is Scope.RANK:
                values.per_rank[kind] = present
                continue
            fold, scale = self._rule(kind, name)
            values.add(kind, name, float(fold.reduce(torch.tensor(present, dtype=torch.float64))) * scale)
        for name in _ordered_union([d.layers for d in decoded]):
            per_rank = [d.layers[name].encode() for d in decoded if name in d.layers]
            rows = torch.tensor(per_rank, dtype=torch.float64).unsqueeze(1)  # (ranks, 1 layer, counters)
            values.layers[name] = LayerCounters.combine_ranks(rows)[0]
        for name in _ordered_union([d.unit_activity for d in decoded]):
            activity = [d.unit_activity.get(name) for d in decoded]
            window = values.layers.get(name)
            if window is None or window.units is None or any(a is None or a.numel() != window.units for a in activity):
                continue  # a rank saw other widths, or no batch: dead units are undefined
            totals = torch.stack(activity).sum(0)  # host tensors: no device synchronisation
            values.folded["dead_units"][name] = float((totals == 0).sum())
        for name in _ordered_union([d.params for d in decoded]):
            values.params[name] = self._param_counters(name, [d.params[name] for d in decoded if name in d.params])
        values.params_with_grad = _ordered_union([dict.fromkeys(d.params_with_grad) for d in decoded])
        return values


class _Plan:
    """How each scalar column of an agreed layout combines across ranks (built once per layout)."""

    def __init__(self, layout: tuple, rules: list[tuple[Fold, float]]) -> None:
        self.layout = layout
        keys = layout[0]
        self.squared = torch.tensor([KINDS_BY_NAME[kind].fold is Fold.SUM_OF_SQUARES for kind, _ in keys])
        self.per_rank = {i for i, (kind, _) in enumerate(keys) if KINDS_BY_NAME[kind].scope is Scope.RANK}
        by_fold: dict[Fold, list[int]] = {}
        for column, (fold, _) in enumerate(rules):
            if fold is not Fold.SUM:
                by_fold.setdefault(fold, []).append(column)
        self.columns = {fold: torch.tensor(columns) for fold, columns in by_fold.items()}
        self.scale = torch.tensor([scale for _, scale in rules], dtype=torch.float64)


class _Decoded:
    """One rank's measurements, back on the host, folded per key within the rank."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], float] = {}  # prepared: norms squared
        self.unit_activity: dict[str, torch.Tensor] = {}
        self.layers: dict[str, LayerCounters] = {}
        self.params: dict[str, list[float]] = {}  # [numel, sampled]
        self.params_with_grad: list[str] = []


def _decode(layout: tuple, row: torch.Tensor) -> _Decoded:
    keys, unit_segments, layer_names, params, params_with_grad = layout
    d = _Decoded()
    for key, value in zip(keys, row[: len(keys)].tolist()):
        fold = KINDS_BY_NAME[key[0]].fold
        prepared = fold.prepare(value)
        d.values[key] = fold.combine(d.values[key], prepared) if key in d.values else prepared
    at = len(keys)
    for name, length in unit_segments:
        d.unit_activity[name] = row[at : at + length]
        at += length
    values = row.tolist()
    for name in layer_names:
        d.layers[name] = LayerCounters.decode(values[at : at + LAYER_COUNTER_WIDTH])
        at += LAYER_COUNTER_WIDTH
    for name in params:
        d.params[name] = values[at : at + 2]
        at += 2
    d.params_with_grad = list(params_with_grad)
    return d


def _ordered_union(dicts: list[dict]) -> list:
    seen: dict = {}
    for d in dicts:
        for key in d:
            seen.setdefault(key, None)
    return list(seen)


def combiner_for(model: nn.Module, params: list[tuple[str, torch.Tensor]], group: Any) -> Optional[RankCombiner]:
    """A RankCombiner when `model` is trained by several ranks together, else None.

    Combining needs every rank to take part, so it is only switched on for a model that is
    DDP-wrapped or FSDP2-sharded, or when the user names the process group explicitly.
    """
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return None
    if group is None and not is_data_parallel(model):
        return None
    combiner = RankCombiner(group, params)
    return combiner if combiner.world > 1 else None


def process_rank(group: Any = None) -> tuple[int, int]:
    """(rank, world size) of this process, (0, 1) when torch.distributed is not in use."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return 0, 1
    return torch.distributed.get_rank(group), torch.distributed.get_world_size(group)
