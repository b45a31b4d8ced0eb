"""watch(..., path=): each recorded step streams into a run store that survives kill -9 and can
be read while the training runs; the values equal those of an in-memory watch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import gradscope
from gradscope.errors import StoreError

from ..models import all_hooks, classification_batches, mlp, train_steps

ROOT = Path(__file__).resolve().parents[2]

# The child trains an MLP on a fixed stream of batches, one step every ~10 ms, and prints each
# finished step; the parent compares against the same training run in memory.
CHILD = """
import sys, time, torch
import gradscope
from tests.models import classification_batches, mlp

torch.set_num_threads(1)
torch.manual_seed(0)
model = mlp()
opt = torch.optim.SGD(model.parameters(), lr=0.1)
batches = classification_batches(1000)
with gradscope.watch(model, optimizer=opt, path=sys.argv[1]) as run:
    for step, (x, y) in enumerate(batches):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.log(loss=loss)
        print(step, flush=True)
        time.sleep(0.01)
"""


def _in_memory_run(steps: int) -> gradscope.RunRecord:
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradscope.watch(model, optimizer=opt) as run:
        for x, y in classification_batches(1000)[:steps]:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(loss=loss)
    return run.record


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_a_store_is_readable_while_training_and_keeps_every_committed_step_after_kill_9(tmp_path):
    store = tmp_path / "killed.gsrun"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(store)], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    assert child.stdout is not None
    try:
        done = [int(child.stdout.readline())]
        while done[-1] < 80:
            done.append(int(child.stdout.readline()))
        time.sleep(1.0)  # the writer commits every half second
        live = gradscope.RunRecord.load(store)  # read while the child is still training
        assert child.poll() is None
        assert len(live.steps) >= 80 and live.steps == list(range(len(live.steps)))
        while done[-1] < len(live.steps) + 60:
            done.append(int(child.stdout.readline()))
        started = time.perf_counter()
        before = done[-1]
        while time.perf_counter() - started < 0.6:
            done.append(int(child.stdout.readline()))
        rate = (done[-1] - before) / (time.perf_counter() - started)  # steps per second
        os.kill(child.pid, signal.SIGKILL)
        done += [int(line) for line in child.stdout.read().split()]
    finally:
        child.kill()
        child.wait()
    reported = done[-1] + 1
    killed = gradscope.RunRecord.load(store)
    stored = len(killed.steps)
    assert killed.steps == list(range(stored))  # a prefix, no torn step
    assert len(live.steps) < stored <= reported
    assert reported - stored <= 1.5 * rate + 2, f"lost {reported - stored} steps at {rate:.0f} steps/s"
    memory = _in_memory_run(stored)
    assert killed.layer_stats == memory.layer_stats and killed.param_stats == memory.param_stats
    assert [m.name for m in killed.modules] == [m.name for m in memory.modules]
    assert killed.scalars["loss"][: stored - 1] == memory.scalars["loss"][: stored - 1]
    assert gradscope.diagnose(killed) is not None


def test_path_streams_the_same_record_as_memory_and_reads_it_back(tmp_path):
    records = []
    for path in (None, tmp_path / "run.gsrun"):
        torch.manual_seed(0)
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with gradscope.watch(model, optimizer=opt, path=path) as run:
            train_steps(model, opt, classification_batches(12), run=run)
            during = run.record  # read back from the store while attached
        assert len(during.steps) == 12
        records.append(run.record)
        assert all_hooks(model, opt) == 0
    memory, stored = records
    assert stored.to_json() == memory.to_json().replace(memory.meta.created, stored.meta.created)
    assert gradscope.RunRecord.load(tmp_path / "run.gsrun").to_json() == stored.to_json()


def test_bad_store_paths_fail_before_training_and_leave_no_hooks(tmp_path):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(StoreError, match="does not exist"):
        gradscope.watch(model, optimizer=opt, path=tmp_path / "missing" / "run.gsrun")
    assert all_hooks(model, opt) == 0 and not (tmp_path / "missing").exists()
    other = tmp_path / "notes.txt"
    other.write_text("keep me")
    with pytest.raises(StoreError, match="not a gradscope run store"):
        gradscope.watch(model, optimizer=opt, path=other)
    assert other.read_text() == "keep me"
    shared = tmp_path / "shared.gsrun"
    with gradscope.watch(model, optimizer=opt, path=shared):
        with pytest.raises(StoreError, match="is writing the run store"):
            gradscope.watch(mlp(), path=shared)
    assert all_hooks(model, opt) == 0
