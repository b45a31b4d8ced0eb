"""On a GPU, recording does not make the training thread wait for the GPU, and it records what the
CPU path records.

A watched step reduces on the device and queues its one device-to-host copy non-blocking into
page-locked memory (`capture.pending.PendingSteps`); nothing in the hot path reads a device value
(`.item()`, `.tolist()`, `bool(tensor)`, `nonzero`). Two checks of that, both needed:
`torch.cuda.set_sync_debug_mode("error")` raises at the synchronising calls torch knows of, and
a kernel that keeps the GPU busy for seconds before the checked steps shows that the CPU queued
all of them while it ran (a wait torch does not flag, a copy into pageable memory say, would
have waited for that kernel).

Every test here skips, saying why, without a CUDA GPU; `benchmarks/gpu_check.sh` runs them with
the CUDA benchmark as one short script on a GPU machine.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradscope

from ..models import ResidualBlock

NO_GPU = "no CUDA GPU on this machine: the non-blocking copy and the stream are checked only where one exists"
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)


class _Net(nn.Module):
    """Conv + BN + in-place ReLU, an in-place residual block, a functional GELU, a tanh layer."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.block = ResidualBlock(8)
        self.fc1 = nn.Linear(8 * 8 * 8, 32)
        self.fc2 = nn.Linear(32, 32)
        self.act = nn.Tanh()
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(self.stem(x)).flatten(1)
        return self.head(self.act(self.fc2(F.gelu(self.fc1(x)))))


def _setup(device: str, steps: int):
    torch.manual_seed(0)
    model = _Net().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 3, 8, 8, generator=g).to(device), torch.randint(0, 4, (8,), generator=g).to(device))
               for _ in range(steps)]
    return model, opt, batches


def _train(model, opt, batches, autocast: bool = False, plant_nonfinite_at: int = -1) -> None:
    device = batches[0][0].device.type
    for i, (x, y) in enumerate(batches):
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        if i == plant_nonfinite_at:
            with torch.no_grad():
                model.fc1.weight.grad[0, 0] = math.nan
                model.fc1.weight.grad[1, 1] = math.inf
        opt.step()
        opt.zero_grad()


def _cycles_per_ms() -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(10_000_000)
    end.record()
    end.synchronize()
    return 10_000_000 / start.elapsed_time(end)


def _keep_gpu_busy(ms: float, cycles_per_ms: float) -> torch.cuda.Event:
    """Queue a kernel that spins for `ms`; the returned event completes when it has."""
    torch.cuda._sleep(int(ms * cycles_per_ms))
    done = torch.cuda.Event()
    done.record()
    return done


class _NoSync:
    """Raise at every synchronising call torch flags, inside the block."""

    def __enter__(self) -> None:
        self._mode = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("error")

    def __exit__(self, *exc) -> None:
        torch.cuda.set_sync_debug_mode(self._mode)


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("every", [1, 3])
def test_watched_cuda_steps_do_not_synchronise_the_stream(every, autocast):
    steps = 6
    model, opt, batches = _setup("cuda", 2 + 2 * steps)
    _train(model, opt, batches[:2], autocast)  # kernels, allocator, momentum buffers
    cycles_per_ms = _cycles_per_ms()  # measured once the GPU's clock has risen from idle
    try:  # the control: the plain loop itself must not synchronise, or the check below means nothing
        with _NoSync():
            _train(model, opt, batches[:2], autocast)
    except RuntimeError as exc:
        pytest.skip(f"the plain training loop synchronises on this torch/GPU ({exc}); gradscope cannot be checked")
    torch.cuda.synchronize()

    with gradscope.watch(model, opt, every=every) as run:
        # Warm-up as busy as the check: a host buffer for each step whose copy is still on its way.
        _keep_gpu_busy(300, cycles_per_ms)
        _train(model, opt, batches[2: 2 + steps], autocast)
        torch.cuda.synchronize()
        busy = _keep_gpu_busy(3000, cycles_per_ms)
        with _NoSync():
            _train(model, opt, batches[2 + steps:], autocast)
        queued_while_busy = not busy.query()
        pending = len(run._pending)
        pinned = all(step.copy.pinned for step in run._pending)
    recorded = list(range(0, 2 * steps, every))
    record = run.record
    # a synchronising call inside a hook raises there, and the hook wrapper counts it as a hook error
    assert not record.hook_errors, [(e.where, e.error) for e in record.hook_errors]
    assert queued_while_busy, "a watched step waited for the GPU: something in the hot path synchronised"
    assert pending == len(recorded) // 2 and pinned  # the checked steps' copies, all still on their way
    assert record.steps == recorded
    norms = record.series("grad_norm", "fc1.weight")
    assert all(v is not None and math.isfinite(v) and v > 0 for v in norms)


_ENTRY_FRACTIONS = {"act_sparsity", "act_saturation", "grad_zero_frac"}


def test_cuda_records_match_the_cpu_path():
    """Same model, data and steps on the CPU (copy read at once) and on the GPU (copy deferred,
    non-finite entries counted on the device): every statistic agrees within float tolerance."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # fp32 as on the CPU
    try:
        records = {}
        for device in ("cpu", "cuda"):
            model, opt, batches = _setup(device, 4)
            with gradscope.watch(model, opt) as run:
                _train(model, opt, batches[:1])
                if device == "cuda":  # deferred: written at a later step end or when read
                    assert len(run._pending) == 1 and next(iter(run._pending)).copy.pinned
                _train(model, opt, batches[1:], plant_nonfinite_at=1)  # at step 2
            records[device] = run.record
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    cpu, gpu = records["cpu"], records["cuda"]
    assert gpu.steps == cpu.steps == [0, 1, 2, 3]
    assert gpu.series("grad_nonfinite", "fc1.weight")[2] == 2.0  # counted on the device
    compared = 0
    for tables in ("layer_stats", "param_stats"):
        expected_tables, got_tables = getattr(cpu, tables), getattr(gpu, tables)
        assert set(got_tables) == set(expected_tables)
        for name, stats in expected_tables.items():
            assert set(got_tables[name]) == set(stats), name
            for stat in stats:
                expected, got = cpu.series(stat, name), gpu.series(stat, name)
                for step, (a, b) in enumerate(zip(expected, got)):
                    if step == 3 and stat not in ("act_calls", "act_batch", "act_eval_calls"):
                        continue  # after the planted NaN the weights are NaN: compared up to there
                    assert (a is None) == (b is None), (name, stat, step)
                    if a is not None:
                        # a fraction of entries may differ by an entry that sits on the threshold
                        near = 0.02 if stat in _ENTRY_FRACTIONS else 1e-5
                        same = (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=2e-3, abs_tol=near)
                        assert same, (name, stat, step, a, b)
                        compared += 1
    assert compared > 300


def test_the_callbacks_summaries_do_not_wait_for_the_gpu():
    """The Lightning and Hugging Face callbacks poll for new summaries after every batch: they read
    what has landed (`landed_record`), so polling never waits; the last steps come at the end."""
    from gradscope.integrations.session import WatchSession

    steps = 6
    model, opt, batches = _setup("cuda", 2 + 2 * steps)
    _train(model, opt, batches[:2])
    cycles_per_ms = _cycles_per_ms()
    session = WatchSession(every=1, path=None, html=None, fail_on=None, watch_options={})
    session.start(model, opt)
    summarised: list[int] = []

    def train_and_poll(chunk) -> None:
        for batch in chunk:
            _train(model, opt, [batch])
            summarised.extend(step for step, _ in session.new_summaries())

    _keep_gpu_busy(300, cycles_per_ms)
    train_and_poll(batches[2: 2 + steps])
    torch.cuda.synchronize()
    busy = _keep_gpu_busy(3000, cycles_per_ms)
    with _NoSync():
        train_and_poll(batches[2 + steps:])
    queued_while_busy = not busy.query()
    summarised.extend(step for step, _ in session.new_summaries(wait=True))
    record = session.finish(out=io.StringIO())
    assert not record.hook_errors, [(e.where, e.error) for e in record.hook_errors]
    assert queued_while_busy, "polling for summaries waited for the GPU"
    assert summarised == record.steps == list(range(2 * steps))
