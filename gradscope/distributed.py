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

import math
import zlib
from typing import Any, Iterable, Optional

import torch
from torch import nn

from .stats import Measurements, StepValues, _LayerWindow

# Queued as norms, combined as sums of squares.
_NORM_KINDS = frozenset({"act_norm", "backprop_norm", "grad_norm", "weight_norm", "update_norm", "rank_grad_norm"})
# Kinds read from the (identical or sharded) parameters at the step; "loss_scale" is the same on every
# rank, so it is taken once like a replicated parameter's value.
_PARAM_KINDS = frozenset(
    {"grad_norm", "grad_l1", "grad_high", "grad_low", "grad_nonzero", "weight_norm", "update_norm", "loss_scale"}
)
# Host counters of a layer, in the order they travel; how each combines across ranks.
_LAYER_COUNTERS = ("calls", "numel", "batch", "eval_calls", "sampled", "units", "saturating")
_MISMATCH = -1.0  # header of a rank whose measurements do not have the agreed layout
_RANK_NORM = ("rank_grad_norm", "")  # not combined: one value per rank (the spread across ranks)


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
        unit_names = list(m.unit_peaks)
        measured = list(m.chunks) + [m.unit_peaks[n] for n in unit_names]
        parts = []
        if measured:  # joined where they were measured, so a GPU run copies once to a gloo host
            home = measured[0].device
            joined = torch.cat([t.reshape(-1).to(home, torch.float64) for t in measured])
            parts.append(joined.to(device))
        layer_names = list(m.layers)
        params = list(m.param_numel)
        counters: list[float] = []
        for name in layer_names:
            w = m.layers[name]
            counters += [w.calls, w.numel, w.batch, w.eval_calls, w.sampled, -1 if w.units is None else w.units,
                         float(w.saturating)]
        for name in params:
            counters += [m.param_numel[name], m.param_sampled.get(name, m.param_numel[name])]
        parts.append(torch.tensor(counters, dtype=torch.float64, device=device))
        layout = (
            tuple(m.keys),
            tuple((n, m.unit_peaks[n].numel()) for n in unit_names),
            tuple(layer_names),
            tuple(params),
            tuple(m.params_with_grad),
        )
        return layout, torch.cat(parts)

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
    def _combine_aligned(self, layout: tuple, rows: torch.Tensor) -> StepValues:
        """All ranks measured the same things in the same order: combine column by column."""
        keys, unit_segments, layer_names, params, params_with_grad = layout
        plan = self._plan_for(layout)
        n = len(keys)
        scalars = rows[:, :n].clone()
        scalars[:, plan.squared] = scalars[:, plan.squared].square()
        combined = torch.where(plan.replicated, scalars[0], scalars.sum(0))
        combined = torch.where(plan.is_max, scalars.max(0).values, combined)
        combined = torch.where(plan.is_min, scalars.min(0).values, combined)
        combined = combined * plan.scale  # 1/R for shards, 1/world^2 for backprop
        values = StepValues()
        sums = values.sums
        for column, ((kind, name), value) in enumerate(zip(keys, combined.tolist())):
            if kind in _PARAM_KINDS:
                sums[kind][name] = math.sqrt(value) if kind in _NORM_KINDS else value
            elif kind == "rank_grad_norm":  # not combined: one (squared) value per rank
                values.rank_grad_norms = [math.sqrt(v) for v in scalars[:, column].tolist()]
            else:  # act_norm and backprop_norm stay squared, as StepValues.add keeps them
                sums[kind][name] = sums[kind].get(name, 0.0) + value
        at = n
        for name, length in unit_segments:
            totals = rows[:, at : at + length].sum(0)
            sums["act_dead"][name] = float((totals == 0).sum())
            at += length
        width = len(_LAYER_COUNTERS)
        counters = rows[:, at : at + width * len(layer_names)].reshape(self.world, len(layer_names), width)
        high, low, total = counters.max(0).values.tolist(), counters.min(0).values.tolist(), counters.sum(0).tolist()
        calls, numel, batch, eval_calls, sampled, units, saturating = range(width)  # column of each counter
        for i, name in enumerate(layer_names):
            same_units = high[i][units] == low[i][units] and high[i][units] >= 0
            values.layers[name] = _LayerWindow(
                calls=int(high[i][calls]),  # per rank, like a single process on the whole batch
                numel=int(total[i][numel]),
                batch=int(total[i][batch]),
                eval_calls=int(high[i][eval_calls]),
                sampled=int(total[i][sampled]),
                units=int(high[i][units]) if same_units else None,
                saturating=bool(high[i][saturating]),
            )
        at += width * len(layer_names)
        sizes = rows[:, at : at + 2 * len(params)].reshape(self.world, len(params), 2)
        first, total = sizes[0].tolist(), sizes.sum(0).tolist()
        for i, name in enumerate(params):
            r = self.replicas.get(name, self.world)
            numel, sampled = first[i] if r >= self.world else (round(t / r) for t in total[i])
            values.param_numel[name], values.param_sampled[name] = int(numel), int(sampled)
        values.params_with_grad = list(params_with_grad)
        return values

    def _plan_for(self, layout: tuple) -> "_Plan":
        if self._plan is None or self._plan.layout is not layout and self._plan.layout != layout:
            self._plan = _Plan(layout, self.replicas, self.world)
        return self._plan

    def _decode_and_combine(self, rows: list[tuple[tuple, torch.Tensor]]) -> StepValues:
        decoded = [_decode(layout, values) for layout, values in rows if layout and layout[0] != "failed"]
        values = StepValues()
        if not decoded:
            return values
        values.rank_grad_norms = [math.sqrt(d.scalars.pop(_RANK_NORM)) for d in decoded if _RANK_NORM in d.scalars]
        self._combine_scalars(values, [d.scalars for d in decoded])
        self._combine_layers(values, [d.layers for d in decoded])
        self._combine_units(values, [d.unit_peaks for d in decoded])
        self._combine_params(values, decoded)
        return values

    def _combine_scalars(self, values: StepValues, per_rank: list[dict[tuple[str, str], float]]) -> None:
        keys = _ordered_union(per_rank)
        backprop_scale = 1.0 / (self.world * self.world)
        for key in keys:
            kind, name = key
            present = [rank[key] for rank in per_rank if key in rank]
            if kind in _PARAM_KINDS:
                r = self.replicas.get(name, self.world)
                if r >= self.world:  # replicated (DDP): every rank read the same all-reduced values
                    total = present[0]
                elif kind == "grad_high":
                    total = max(present)
                elif kind == "grad_low":
                    total = min(present)
                else:
                    total = sum(present) / r
                values.sums[kind][name] = math.sqrt(total) if kind in _NORM_KINDS else total
            elif kind == "backprop_norm":
                values.sums[kind][name] = sum(present) * backprop_scale  # kept squared, as StepValues does
            else:  # activation sums and counts; act_norm stays squared
                values.sums[kind][name] = sum(present)

    def _combine_layers(self, values: StepValues, per_rank: list[dict[str, _LayerWindow]]) -> None:
        for name in _ordered_union(per_rank):
            windows = [rank[name] for rank in per_rank if name in rank]
            units = {w.units for w in windows}
            values.layers[name] = _LayerWindow(
                calls=max(w.calls for w in windows),  # per rank, like a single process on the whole batch
                numel=sum(w.numel for w in windows),
                batch=sum(w.batch for w in windows),
                eval_calls=max(w.eval_calls for w in windows),
                sampled=sum(w.sampled for w in windows),
                units=units.pop() if len(units) == 1 else None,
                saturating=any(w.saturating for w in windows),
            )

    def _combine_units(self, values: StepValues, per_rank: list[dict[str, torch.Tensor]]) -> None:
        for name in _ordered_union(per_rank):
            peaks = [rank.get(name) for rank in per_rank]
            window = values.layers.get(name)
            if window is None or window.units is None or any(p is None or p.numel() != window.units for p in peaks):
                continue  # a rank saw other widths, or no batch: dead units are undefined
            totals = torch.stack(peaks).sum(0)  # host tensors: no device synchronisation
            values.sums["act_dead"][name] = float((totals == 0).sum())

    def _combine_params(self, values: StepValues, decoded: list["_Decoded"]) -> None:
        for name in _ordered_union([d.param_numel for d in decoded]):
            r = self.replicas.get(name, self.world)
            numel = [d.param_numel[name] for d in decoded if name in d.param_numel]
            sampled = [d.param_sampled[name] for d in decoded if name in d.param_sampled]
            if r >= self.world:
                values.param_numel[name], values.param_sampled[name] = int(numel[0]), int(sampled[0])
            else:
                values.param_numel[name] = int(round(sum(numel) / r))
                values.param_sampled[name] = int(round(sum(sampled) / r))
        values.params_with_grad = _ordered_union([dict.fromkeys(d.params_with_grad) for d in decoded])


class _Plan:
    """How each scalar column of an agreed layout combines across ranks (built once per layout)."""

    def __init__(self, layout: tuple, replicas: dict[str, int], world: int) -> None:
        self.layout = layout
        keys = layout[0]
        squared, replicated, is_max, is_min, scale = [], [], [], [], []
        for kind, name in keys:
            r = replicas.get(name, world) if kind in _PARAM_KINDS else 0
            squared.append(kind in _NORM_KINDS)
            replicated.append(r >= world)
            is_max.append(kind == "grad_high" and r < world)
            is_min.append(kind == "grad_low" and r < world)
            if kind == "backprop_norm":
                scale.append(1.0 / (world * world))
            elif kind in _PARAM_KINDS and r < world and kind not in ("grad_high", "grad_low"):
                scale.append(1.0 / r)
            else:
                scale.append(1.0)
        self.squared = torch.tensor(squared, dtype=torch.bool)
        self.replicated = torch.tensor(replicated, dtype=torch.bool)
        self.is_max = torch.tensor(is_max, dtype=torch.bool)
        self.is_min = torch.tensor(is_min, dtype=torch.bool)
        self.scale = torch.tensor(scale, dtype=torch.float64)


class _Decoded:
    """One rank's measurements, back on the host, aggregated per key within the rank."""

    def __init__(self) -> None:
        self.scalars: dict[tuple[str, str], float] = {}
        self.unit_peaks: dict[str, torch.Tensor] = {}
        self.layers: dict[str, _LayerWindow] = {}
        self.param_numel: dict[str, float] = {}
        self.param_sampled: dict[str, float] = {}
        self.params_with_grad: list[str] = []


def _decode(layout: tuple, row: torch.Tensor) -> _Decoded:
    keys, unit_segments, layer_names, params, params_with_grad = layout
    d = _Decoded()
    for key, value in zip(keys, row[: len(keys)].tolist()):
        contribution = value * value if key[0] in _NORM_KINDS else value
        d.scalars[key] = d.scalars.get(key, 0.0) + contribution
    at = len(keys)
    for name, length in unit_segments:
        d.unit_peaks[name] = row[at : at + length]
        at += length
    values = row.tolist()
    width = len(_LAYER_COUNTERS)
    for name in layer_names:
        calls, numel, batch, eval_calls, sampled, units, saturating = values[at : at + width]
        d.layers[name] = _LayerWindow(
            calls=int(calls), numel=int(numel), batch=int(batch), eval_calls=int(eval_calls), sampled=int(sampled),
            units=None if units < 0 else int(units), saturating=bool(saturating),
        )
        at += width
    for name in params:
        d.param_numel[name], d.param_sampled[name] = values[at], values[at + 1]
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
