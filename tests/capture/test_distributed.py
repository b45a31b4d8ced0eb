"""DDP and FSDP2 on CPU with gloo: two real processes against a single process on the whole batch.

The two-process runs are spawned once per module (importing torch in a child takes seconds)
and each test checks one aspect of their records.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import socket
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

import gradscope
from gradscope.statdefs import ACTIVATION_STAT_NAMES, GRADIENT_STAT_NAMES

from ..models import all_hooks

WORLD = 2
STEPS = 3
GLOBAL_BATCH = 12


def _ddp_model() -> nn.Sequential:
    """ReLU units chosen so that some are dead everywhere and one is dead on rank 0 only."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))
    with torch.no_grad():
        model[0].bias[:3] = -100.0  # units 0-2: dead on every rank
        model[0].weight[3] = 0.0
        model[0].weight[3, 0] = 5.0
        model[0].bias[3] = -1.0  # unit 3: alive only for samples with x0 > 0.2, which rank 0 lacks
        model[2].weight.mul_(4.0)  # some tanh outputs saturate
    return model


def _ddp_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    batches = []
    for _ in range(STEPS):
        x = torch.randn(GLOBAL_BATCH, 6, generator=g)
        half = GLOBAL_BATCH // WORLD
        x[:half, 0] = -x[:half, 0].abs()  # rank 0's half: x0 <= 0
        x[half:, 0] = x[half:, 0].abs() + 0.5  # rank 1's half: x0 > 0.5
        batches.append((x, torch.randint(0, 3, (GLOBAL_BATCH,), generator=g)))
    return batches


def _fsdp_model() -> nn.Sequential:
    """First dims 5 and 1 do not divide by two ranks: shards of 3 and 2 rows, and of 1 and 0 (empty)."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1))


def _fsdp_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(4)
    return [(torch.randn(GLOBAL_BATCH, 6, generator=g), torch.randn(GLOBAL_BATCH, 1, generator=g)) for _ in range(STEPS)]


class _Branchy(nn.Module):
    """Runs its ReLU a second time when `extra` is set: ranks can measure different things."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.fc, self.act, self.head = nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)
        self.extra = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc(x))
        return self.head(self.act(h) if self.extra else h)


def _local(batch: tuple[torch.Tensor, torch.Tensor], rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    half = GLOBAL_BATCH // WORLD
    return tuple(t[rank * half : (rank + 1) * half] for t in batch)  # type: ignore[return-value]


def _train(model: nn.Module, watched: nn.Module, opt, batches, loss_fn, rank=None):
    for batch in batches:
        x, y = batch if rank is None else _local(batch, rank)
        loss = loss_fn(watched(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()


# ---- the two ranks -----------------------------------------------------------------------------
def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60)
    )
    out_dir = Path(out)
    result: dict = {}
    try:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # DDP, statistics read at the optimizer step
        model = _ddp_model()
        ddp = DDP(model)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
        hooks_before = all_hooks(ddp, opt)
        with gradscope.watch(ddp, optimizer=opt) as run:
            _train(model, ddp, opt, _ddp_batches(), F.cross_entropy, rank)
            run.log(loss=1.0)
        result["ddp_hooks_left"] = all_hooks(ddp, opt) - hooks_before
        # every rank asks to save to the same path: only rank 0 may write it
        result["ddp_saved"] = run.save(out_dir / "ddp.json") is not None
        result["ddp_is_main"] = run.is_main_process
        result["ddp_steps_kept"] = run.record.steps
        result["ddp_collectives"] = run._ranks.collectives

        # DDP recording every 2nd step: the unrecorded step's activations join the window
        model = _ddp_model()
        ddp = DDP(model)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
        with gradscope.watch(ddp, optimizer=opt, every=2) as run:
            _train(model, ddp, opt, _ddp_batches(), F.cross_entropy, rank)
        run.save(out_dir / "ddp_every2.json")

        # DDP with budget=: each rank times itself, yet both must record the same steps (the flush
        # is a collective). Costs differ between real ranks; here the budgets do, so that on its own
        # rank 1 would record nearly every step and rank 0 rarely.
        model = _ddp_model()
        ddp = DDP(model)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        recorded_at = []
        with gradscope.watch(ddp, optimizer=opt, budget=0.01 if rank == 0 else 1.0) as run:
            for i, batch in enumerate(_ddp_batches() * 4):
                x, y = _local(batch, rank)
                F.cross_entropy(ddp(x), y).backward()
                opt.step()
                opt.zero_grad()
                if run.recorded_steps > len(recorded_at):
                    recorded_at.append(i)
        result["budget_recorded_at"] = recorded_at
        result["budget_record_steps"] = run.record.steps
        result["budget_intervals"] = run.record.intervals

        # DDP with GradScaler: rank 1's loss overflows at step 1, the all-reduce spreads the inf,
        # both ranks' scalers skip the step, and both end it (the collective needs both)
        model = _ddp_model()
        ddp = DDP(model)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler("cpu")
        with gradscope.watch(ddp, optimizer=opt, scaler=scaler) as run:
            for i, batch in enumerate(_ddp_batches()):
                x, y = _local(batch, rank)
                loss = F.cross_entropy(ddp(x), y) * (float("inf") if (i, rank) == (1, 1) else 1.0)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                opt.zero_grad()
        run.save(out_dir / "ddp_scaler.json")

        # DDP where rank 1 takes a data-dependent branch at step 1: the layouts differ for a step
        model = _Branchy()
        ddp = DDP(model)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        with gradscope.watch(ddp, optimizer=opt) as run:
            for i, batch in enumerate(_ddp_batches()):
                model.extra = rank == 1 and i == 1
                x, y = _local(batch, rank)
                F.cross_entropy(ddp(x), y).backward()
                opt.step()
                opt.zero_grad()
        run.save(out_dir / "branchy.json")
        result["branchy_collectives"] = run._ranks.collectives

        # DDP without an optimizer: gradients read after backward, once DDP has all-reduced them
        model = _ddp_model()
        ddp = DDP(model)
        x, y = _local(_ddp_batches()[0], rank)
        with gradscope.watch(ddp) as run:
            F.cross_entropy(ddp(x), y).backward()
        run.save(out_dir / "ddp_backward.json")

        # a plain model in an initialised process group: this rank's statistics only, no collective
        model = _ddp_model()
        with gradscope.watch(model) as run:
            x, y = _local(_ddp_batches()[0], rank)
            F.cross_entropy(model(x), y).backward()
        result["plain_combined"] = run._ranks is not None
        result["plain_steps"] = run.record.steps
        result["plain_is_main"] = run.is_main_process
        result["plain_notes"] = run.record.meta.notes

        # FSDP2 with uneven (and one empty) shards
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (WORLD,))
        model = _fsdp_model()
        for layer in (model[0], model[2], model[4]):
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        result["fsdp_local_rows"] = {
            name: p.to_local().shape[0] for name, p in model.named_parameters() if name.endswith("weight")
        }
        with gradscope.watch(model, optimizer=opt) as run:
            _train(model, model, opt, _fsdp_batches(), F.mse_loss, rank)
        run.save(out_dir / "fsdp.json")
        result["fsdp_hook_errors"] = [e.error for e in run.record.hook_errors]
        result["fsdp_collectives"] = run._ranks.collectives

        # FSDP2: a non-finite gradient entry in rank 1's shard only is counted in rank 0's record
        model = _fsdp_model()
        for layer in (model[0], model[2], model[4]):
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with gradscope.watch(model, optimizer=opt) as run:
            x, y = _local(_fsdp_batches()[0], rank)
            F.mse_loss(model(x), y).backward()
            if rank == 1:
                model[0].weight.grad.to_local()[0, 0] = float("inf")
            opt.step()
        run.save(out_dir / "fsdp_inf.json")

        # FSDP2 without an optimizer: gradients read after backward, once the shards are reduced
        model = _fsdp_model()
        for layer in (model[0], model[2], model[4]):
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        with gradscope.watch(model) as run:
            x, y = _local(_fsdp_batches()[0], rank)
            F.mse_loss(model(x), y).backward()
        run.save(out_dir / "fsdp_backward.json")

        # the torchrun sample, in this already initialised process group
        sample = _load_sample()
        report = sample.write_outputs(sample.train(steps=3), str(out_dir / "sample.json"))
        result["sample_report"] = report
    finally:
        (out_dir / f"rank{rank}.json").write_text(json.dumps(result))
        dist.destroy_process_group()


def _load_sample():
    path = Path(__file__).resolve().parents[2] / "samples" / "ddp_train.py"
    spec = importlib.util.spec_from_file_location("ddp_train_sample", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ranks")
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MASTER_ADDR")}
    os.environ.update(OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    try:
        mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return out


# ---- single-process references on the global batch ---------------------------------------------
def _reference_ddp(every: int = 1) -> gradscope.RunRecord:
    model = _ddp_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with gradscope.watch(model, optimizer=opt, every=every) as run:
        _train(model, model, opt, _ddp_batches(), F.cross_entropy)
    return run.record


def _reference_fsdp() -> gradscope.RunRecord:
    model = _fsdp_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with gradscope.watch(model, optimizer=opt) as run:
        _train(model, model, opt, _fsdp_batches(), F.mse_loss)
    return run.record


def _assert_same_statistics(got: gradscope.RunRecord, want: gradscope.RunRecord, stats, names) -> int:
    compared = 0
    for name in names:
        for stat in stats:
            a, b = got.series(stat, name), want.series(stat, name)
            for step, (x, y) in enumerate(zip(a, b)):
                assert (x is None) == (y is None), (name, stat, step, x, y)
                if x is not None:
                    assert x == pytest.approx(y, rel=1e-5, abs=1e-7), (name, stat, step)
                    compared += 1
    return compared


def test_ddp_gradient_statistics_equal_a_single_process_on_the_global_batch(two_ranks):
    got, want = gradscope.RunRecord.load(two_ranks / "ddp.json"), _reference_ddp()
    assert got.steps == want.steps == list(range(STEPS))
    names = want.layers + list(want.param_stats)
    compared = _assert_same_statistics(got, want, GRADIENT_STAT_NAMES, names)
    assert compared >= 6 * 8 * STEPS  # 3 Linear layers and their 6 parameters, 8 statistics each
    assert all(v > 0 for v in got.series("update_ratio", "0.weight"))


def test_ddp_activation_statistics_are_those_of_the_global_batch(two_ranks):
    got, want = gradscope.RunRecord.load(two_ranks / "ddp.json"), _reference_ddp()
    stats = [s for s in ACTIVATION_STAT_NAMES] + ["backprop_norm"]
    _assert_same_statistics(got, want, stats, want.layers)
    assert got.series("act_batch", "0") == [float(GLOBAL_BATCH)] * STEPS  # global batch, per call
    assert got.series("act_calls", "0") == [1.0] * STEPS
    # units 0-2 are dead on both ranks; unit 3 is dead on rank 0 only, so not dead
    assert got.series("act_dead_frac", "1")[0] == pytest.approx(3 / 8)
    assert 0 < got.series("act_saturation", "3")[0] < 1


def test_ddp_names_rank_zero_writes_and_one_collective_per_step(two_ranks):
    record = gradscope.RunRecord.load(two_ranks / "ddp.json")
    assert record.layers[0] == "0" and not any(n.startswith("module") for n in record.layers + list(record.param_stats))
    assert record.meta.options["world_size"] == WORLD
    assert any("Trained by 2 ranks (DDP)" in note for note in record.meta.notes)
    rank0 = json.loads((two_ranks / "rank0.json").read_text())
    rank1 = json.loads((two_ranks / "rank1.json").read_text())
    assert rank0["ddp_saved"] and rank0["ddp_is_main"] and rank0["ddp_steps_kept"] == list(range(STEPS))
    assert not rank1["ddp_saved"] and not rank1["ddp_is_main"] and rank1["ddp_steps_kept"] == []
    assert rank0["ddp_collectives"] == rank1["ddp_collectives"] == STEPS
    assert rank0["fsdp_collectives"] == STEPS
    assert sorted(p.name for p in two_ranks.iterdir() if not p.name.startswith("rank")) == [
        "branchy.json", "ddp.json", "ddp_backward.json", "ddp_every2.json", "ddp_scaler.json", "fsdp.json", "fsdp_backward.json", "fsdp_inf.json",
        "sample.json",
    ]
    assert rank0["ddp_hooks_left"] == rank1["ddp_hooks_left"] == 0
    assert record.scalar_series("loss") == ([STEPS - 1], [1.0])


def test_ddp_records_the_spread_of_each_ranks_own_gradient_norm(two_ranks):
    record = gradscope.RunRecord.load(two_ranks / "ddp.json")
    steps, highs = record.scalar_series("grad_norm_rank_max")
    _, lows = record.scalar_series("grad_norm_rank_min")
    assert steps == list(range(STEPS))
    # step 0: each rank's gradient of its own half of the batch, before DDP averaged them
    local = []
    for rank in range(WORLD):
        model = _ddp_model()
        x, y = _local(_ddp_batches()[0], rank)
        F.cross_entropy(model(x), y).backward()
        local.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item())
    assert highs[0] == pytest.approx(max(local), rel=1e-5)
    assert lows[0] == pytest.approx(min(local), rel=1e-5)
    assert highs[0] > 1.05 * lows[0]  # the halves differ (x0 <= 0 on rank 0, > 0.5 on rank 1)


def test_torchrun_sample_writes_only_on_rank_zero(two_ranks):
    rank0 = json.loads((two_ranks / "rank0.json").read_text())
    rank1 = json.loads((two_ranks / "rank1.json").read_text())
    assert rank1["sample_report"] is None
    record = gradscope.RunRecord.load(two_ranks / "sample.json")
    assert record.steps == [0, 1, 2] and record.layers[0] == "0"
    assert record.series("act_batch", "0") == [64.0] * 3  # the global batch
    assert "Linear" in rank0["sample_report"] and "Sigmoid" in rank0["sample_report"]


@pytest.mark.parametrize("kind", ["ddp", "fsdp"])
def test_without_optimizer_the_gradients_are_read_once_reduced(two_ranks, kind):
    got = gradscope.RunRecord.load(two_ranks / f"{kind}_backward.json")
    assert got.meta.grad_source == "backward"
    model, (x, y) = (_ddp_model(), _ddp_batches()[0]) if kind == "ddp" else (_fsdp_model(), _fsdp_batches()[0])
    (F.cross_entropy if kind == "ddp" else F.mse_loss)(model(x), y).backward()
    for name in ("0.weight", "2.weight", "4.bias"):
        param = model.get_parameter(name)
        expected = torch.linalg.vector_norm(param.grad).item()
        assert got.series("grad_norm", name) == [pytest.approx(expected, rel=1e-5)], name


def test_fsdp2_uneven_and_empty_shards_give_global_statistics(two_ranks):
    rank0 = json.loads((two_ranks / "rank0.json").read_text())
    rank1 = json.loads((two_ranks / "rank1.json").read_text())
    assert rank0["fsdp_local_rows"] == {"0.weight": 3, "2.weight": 4, "4.weight": 1}
    assert rank1["fsdp_local_rows"] == {"0.weight": 2, "2.weight": 4, "4.weight": 0}  # an empty shard
    assert rank0["fsdp_hook_errors"] == rank1["fsdp_hook_errors"] == []
    got, want = gradscope.RunRecord.load(two_ranks / "fsdp.json"), _reference_fsdp()
    assert got.layers == want.layers
    names = want.layers + list(want.param_stats)
    compared = _assert_same_statistics(got, want, GRADIENT_STAT_NAMES, names)
    assert compared >= 6 * 8 * STEPS
    _assert_same_statistics(got, want, list(ACTIVATION_STAT_NAMES) + ["backprop_norm"], want.layers)
    assert any("FSDP2 shards" in note for note in got.meta.notes)
    assert not math.isnan(got.series("grad_max", "4.bias")[0])


def test_fsdp2_non_finite_entries_of_one_shard_are_counted_across_ranks(two_ranks):
    record = gradscope.RunRecord.load(two_ranks / "fsdp_inf.json")
    assert record.series("grad_nonfinite", "0.weight") == [1.0]
    assert record.series("grad_norm", "0.weight") == [math.inf]
    assert record.series("grad_nonfinite", "0.bias") == [0.0]
    assert record.series("grad_nonfinite", "2") == [0.0]


def test_ranks_that_measured_different_things_are_still_combined(two_ranks):
    record = gradscope.RunRecord.load(two_ranks / "branchy.json")
    rank0 = json.loads((two_ranks / "rank0.json").read_text())
    # step 0 agrees on the layout; step 1 falls back to exchanging layouts (one extra collective)
    assert rank0["branchy_collectives"] == STEPS + 1
    assert record.steps == [0, 1, 2] and not record.hook_errors
    assert record.series("act_calls", "act") == [1.0, 2.0, 1.0]  # calls per rank: the most any rank made
    assert record.series("act_batch", "act")[0] == GLOBAL_BATCH
    assert all(v > 0 for v in record.series("grad_norm", "fc"))


def test_a_plain_model_under_torch_distributed_keeps_its_own_statistics(two_ranks):
    for rank in range(WORLD):
        result = json.loads((two_ranks / f"rank{rank}.json").read_text())
        assert result["plain_combined"] is False and result["plain_steps"] == [0]
        assert result["plain_is_main"] == (rank == 0)
        assert any("neither DDP-wrapped nor FSDP2-sharded" in note for note in result["plain_notes"])


def test_without_torch_distributed_the_process_is_main_and_saves(tmp_path):
    model = _ddp_model()
    with gradscope.watch(model) as run:
        x, y = _ddp_batches()[0]
        F.cross_entropy(model(x), y).backward()
    assert run.is_main_process
    assert run.save(tmp_path / "run.json") == tmp_path / "run.json"
    assert gradscope.RunRecord.load(tmp_path / "run.json").steps == [0]
    assert run.record.meta.options["world_size"] == 1
    assert not any("ranks" in note for note in run.record.meta.notes)


def test_ddp_every_second_step_combines_whole_windows(two_ranks):
    got, want = gradscope.RunRecord.load(two_ranks / "ddp_every2.json"), _reference_ddp(every=2)
    assert got.steps == want.steps == [0, 2]
    stats = list(GRADIENT_STAT_NAMES) + list(ACTIVATION_STAT_NAMES) + ["backprop_norm"]
    _assert_same_statistics(got, want, stats, want.layers + list(want.param_stats))
    assert got.series("act_calls", "1") == [1.0, 1.0]  # activations: the recorded step; dead units: the window


def test_ddp_grad_scaler_overflow_on_one_rank_is_a_skipped_step(two_ranks):
    record = gradscope.RunRecord.load(two_ranks / "ddp_scaler.json")
    assert record.steps == [0, 1, 2] and record.skipped_steps == [1]
    assert record.series("grad_norm", "0")[1] is None
    assert record.series("grad_norm", "0")[2] > 0
    # step 0 is unscaled: the same as the plain single-process step on the global batch
    unscaled = _reference_ddp().series("grad_norm", "0.weight")[0]
    assert record.series("grad_norm", "0.weight")[0] == pytest.approx(unscaled, rel=1e-5)
    assert not record.hook_errors


def test_ddp_with_a_budget_records_the_same_steps_on_every_rank(two_ranks):
    ranks = [json.loads((two_ranks / f"rank{r}.json").read_text()) for r in range(WORLD)]
    recorded = [r["budget_recorded_at"] for r in ranks]
    assert recorded[0] == recorded[1], recorded  # the longest interval any rank chose, agreed at each decision
    assert recorded[0][0] == 0 and len(recorded[0]) < 4 * STEPS
    assert ranks[0]["budget_record_steps"] == recorded[0] and ranks[1]["budget_record_steps"] == []
    assert len(ranks[0]["budget_intervals"]) == len(recorded[0])
