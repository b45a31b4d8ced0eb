"""The deferred device-to-host copy (what a watch does on a GPU) run on a CPU: the records must be
byte-identical to those of the immediate copy, whatever the loop does.

On a GPU a recorded step's values are copied non-blocking into page-locked memory and written to
the record at a later step end, when the record is read, or at detach (`PendingValues`,
`capture.pending.PendingSteps`). On a CPU the copy costs nothing to wait for, so a watch makes it at
once; `_defer_copies = True` forces the GPU's path here, so its bookkeeping (step order, void
steps, eval calls, non-finite counts, a crash followed by detach) is tested on every machine.
tests/capture/test_cuda_nosync.py checks on a GPU that the path does not stall the stream.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradscope
from gradscope.measure import HostBuffers, StepAccumulator

from ..models import SmallResNet, classification_batches, image_batches, mlp


class _FunctionalNet(nn.Module):
    """Activations called as functions: their record entries appear at the first forward."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.tanh(self.fc2(F.relu(self.fc1(x)))))


class _SigmoidOutputNet(_FunctionalNet):
    """A final torch.sigmoid that no layer reads: measured on the model's output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(super().forward(x))


MODELS = {
    "tanh-mlp": (lambda: mlp((8, 16, 16, 3), nn.Tanh), lambda: classification_batches(8, batch=8)),
    "resnet": (SmallResNet, lambda: image_batches(8, batch=4)),
    "functional": (_FunctionalNet, lambda: classification_batches(8, batch=8)),
    "sigmoid-output": (_SigmoidOutputNet, lambda: classification_batches(8, batch=8)),
}


class _Crash(Exception):
    pass


def _record_json(make_model, make_batches, every: int, deferred: bool, optimizer: bool = True,
                 crash_at: int | None = None, nan_at: int | None = None, path=None) -> str:
    """Train with gradient accumulation (2 micro-batches a step), eval calls with and without
    grad, a void backward; the record's JSON, its creation time blanked."""
    torch.manual_seed(0)
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05) if optimizer else None
    batches = make_batches()
    run = gradscope.watch(model, opt, every=every, path=path)
    run._defer_copies = deferred
    try:
        with run:
            for i, (x, y) in enumerate(batches):
                for half in (x[: len(x) // 2], x[len(x) // 2:]):
                    loss = F.cross_entropy(model(half), y[: len(half)])
                    loss.backward()
                if i == crash_at:
                    raise _Crash
                if i == nan_at:
                    first = next(model.parameters())
                    first.grad.view(-1)[0] = math.nan
                    first.grad.view(-1)[-1] = math.inf
                if opt is not None:
                    opt.step()
                    opt.zero_grad()
                else:
                    model.zero_grad()
                if i % 3 == 1:
                    model.eval()
                    model(x)  # an eval call with grad enabled: counted
                    with torch.no_grad():
                        model(x)
                    model.train()
                if i == 4 and opt is not None:
                    F.cross_entropy(model(x), y).backward()  # a backward whose gradients are discarded
                    opt.zero_grad()
                run.log(loss=loss.item())
    except _Crash:
        pass
    data = run.record.to_dict()
    data["meta"]["created"] = ""
    return json.dumps(data, sort_keys=False)


@pytest.mark.parametrize("every", [1, 3])
@pytest.mark.parametrize("name", list(MODELS))
def test_deferred_copy_records_are_byte_identical(name, every):
    make_model, make_batches = MODELS[name]
    immediate = _record_json(make_model, make_batches, every, deferred=False)
    deferred = _record_json(make_model, make_batches, every, deferred=True)
    assert json.loads(immediate)["steps"] == list(range(0, 8, every))
    assert deferred == immediate


def test_deferred_copy_without_optimizer_and_after_a_crash():
    make_model, make_batches = MODELS["tanh-mlp"]
    # without an optimizer each backward (two a batch) is a step; the crash comes after batch 5's
    for kwargs, steps in (({"optimizer": False}, 16), ({"crash_at": 5}, 5), ({"optimizer": False, "crash_at": 5}, 12)):
        immediate = _record_json(make_model, make_batches, 1, deferred=False, **kwargs)
        deferred = _record_json(make_model, make_batches, 1, deferred=True, **kwargs)
        assert json.loads(immediate)["steps"] == list(range(steps)), kwargs
        assert deferred == immediate, kwargs


def test_deferred_copy_streamed_into_a_store_survives_a_crash(tmp_path):
    """The steps still on their way at the crash reach the store before detach closes it."""
    make_model, make_batches = MODELS["resnet"]
    runs = [_record_json(make_model, make_batches, 1, deferred, crash_at=5, path=tmp_path / f"{deferred}.gsrun")
            for deferred in (False, True)]
    assert json.loads(runs[0])["steps"] == [0, 1, 2, 3, 4]
    assert runs[1] == runs[0]
    stored = gradscope.RunRecord.from_dict(json.loads(runs[1]))
    assert len(stored.series("grad_norm", "head.weight")) == 5


def test_deferred_copy_counts_nonfinite_gradient_entries():
    """The count is taken on the device for every gradient (the decision to count comes later, from
    the copy): the same counts as the immediate path's, which counts only where the norm is bad."""
    make_model, make_batches = MODELS["tanh-mlp"]
    immediate = _record_json(make_model, make_batches, 1, deferred=False, nan_at=2)
    deferred = _record_json(make_model, make_batches, 1, deferred=True, nan_at=2)
    assert deferred == immediate
    record = gradscope.RunRecord.from_dict(json.loads(deferred))
    # a NaN and an inf planted in the first weight's gradient at step 2; SGD spreads NaN from there
    assert record.series("grad_nonfinite", "0.weight")[:4] == [0.0, 0.0, 2.0, 8 * 16.0]
    assert record.series("grad_nonfinite", "0.bias")[:3] == [0.0, 0.0, 0.0]


def test_record_read_mid_run_shows_every_recorded_step():
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradscope.watch(model, opt) as run:
        run._defer_copies = True
        for i, (x, y) in enumerate(classification_batches(3)):
            F.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
            assert len(run._pending) == 1  # this step waits for a later step end or a reader
            assert run.record.steps == list(range(i + 1))
            assert not run._pending
    assert run.record.steps == [0, 1, 2]


def test_pending_values_hold_no_device_tensor_and_reuse_the_host_buffer():
    """What waits for the next step is host-side only (counters, keys, the host buffer): the
    window's device tensors are gone with the step. The buffer is reused once it was read."""
    model = mlp()
    x = torch.randn(4, 8)
    acc = StepAccumulator()
    buffers = HostBuffers()
    out = model(x)
    acc.add_activation("0", out, 1, None, nonnegative=False)
    acc.add_gradients([("w", torch.ones(3, 3))], [torch.ones(3, 3)])
    pending = acc.flush_later(buffers)
    held = [v for v in vars(pending._measured).values() if isinstance(v, torch.Tensor)]
    assert not held and not pending._measured.chunks and not pending._measured.unit_activity
    host = pending._copy._host
    values = pending.values()
    assert values.folded["grad_norm"]["w"] == pytest.approx(9.0)  # kept squared
    assert values.folded["act_sum"]["0"] == pytest.approx(out.sum().item(), rel=1e-6)
    assert buffers.take(host.numel(), host.dtype, pinned=False) is host
