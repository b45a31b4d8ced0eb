"""The Lightning callback in a real fit on CPU: accumulation, clipping, loggers, failures, no hook left."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn

from ..models import all_hooks
from . import common
from .common import ACCUMULATE, CLIP, LR, batches, deep_sigmoid

L = pytest.importorskip("lightning.pytorch", reason="the lightning extra: pip install -e .[test]")
from gradscope.integrations.lightning import GradscopeCallback  # noqa: E402

STEPS = 6  # optimizer steps, each of ACCUMULATE micro-batches


class Classifier(L.LightningModule):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def training_step(self, batch, batch_index):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR)


def _fit(module: L.LightningModule, callback, data, tmp_path, steps: int = STEPS, **trainer_options):
    loader = torch.utils.data.DataLoader(data, batch_size=None, shuffle=False)
    trainer = L.Trainer(
        max_steps=steps,
        accumulate_grad_batches=ACCUMULATE,
        gradient_clip_val=CLIP,
        accelerator="cpu",
        devices=1,
        logger=L.loggers.CSVLogger(tmp_path, name="fit"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[callback],
        **trainer_options,
    )
    trainer.fit(module, loader)
    return trainer


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("lightning")
    data = batches(STEPS * ACCUMULATE)
    torch.manual_seed(0)
    module = Classifier(deep_sigmoid())
    hooks_before = all_hooks(module)
    callback = GradscopeCallback(html=tmp_path / "report.html", path=tmp_path / "run.json")
    trainer = _fit(module, callback, data, tmp_path)
    torch.manual_seed(0)
    reference = common.plain_loop_record(deep_sigmoid(), data)
    return callback, trainer, module, hooks_before, reference, tmp_path


def test_one_record_step_per_optimizer_step_matching_a_plain_loop_before_and_after_clipping(fitted):
    callback, trainer, _, _, reference, _ = fitted
    assert trainer.global_step == STEPS
    assert callback.record.steps == list(range(STEPS))
    # Lightning never calls the LightningModule itself; its submodules' forwards count as the step's forward.
    assert not any("no forward hook ran" in note for note in callback.record.meta.notes)
    assert callback.record.last("backprop_norm", "net.0") is not None
    common.assert_same_gradient_statistics(callback.record, reference, prefix="net.")
    common.assert_clipped_at(callback.record, CLIP)  # gradient_clip_val acted, and the record saw past it


def test_deep_sigmoid_is_diagnosed_and_the_files_are_written(fitted):
    callback, _, _, _, _, tmp_path = fitted
    assert "vanishing-gradients" in callback.diagnosis.codes()
    assert (tmp_path / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    from gradscope import RunRecord

    assert RunRecord.load(tmp_path / "run.json").steps == callback.record.steps


def test_every_hook_is_gone_after_the_fit(fitted):
    callback, trainer, module, hooks_before, _, _ = fitted
    assert all_hooks(module) == hooks_before
    assert all_hooks(module, trainer.optimizers[0]) == hooks_before


def test_summary_scalars_reach_the_trainers_logger_and_nothing_per_layer(fitted):
    _, trainer, _, _, _, _ = fitted
    with open(trainer.logger.log_dir + "/metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = set(rows[0])
    ours = {c for c in columns if c.startswith("gradscope/")}
    assert {"gradscope/grad_norm_total", "gradscope/backprop_first_last_ratio"} <= ours and len(ours) <= 6
    assert [int(r["step"]) for r in rows if r.get("gradscope/grad_norm_total")] == list(range(STEPS))
    ratios = [float(r["gradscope/backprop_first_last_ratio"]) for r in rows if r.get("gradscope/grad_norm_total")]
    assert all(0 < ratio < 1e-3 for ratio in ratios)  # eight sigmoid layers: the signal vanishes


def test_fail_on_error_stops_the_fit_with_a_clear_message(tmp_path):
    from gradscope.integrations.session import FindingThresholdError

    torch.manual_seed(0)
    module = Classifier(deep_sigmoid())
    hooks_before = all_hooks(module)
    callback = GradscopeCallback(fail_on="error", log_summary=False)
    with pytest.raises(FindingThresholdError, match=r"fail_on='error'.*vanishing-gradients"):
        _fit(module, callback, batches(STEPS * ACCUMULATE), tmp_path)
    assert all_hooks(module) == hooks_before  # detached on the exception too
    assert "vanishing-gradients" in callback.diagnosis.codes()
    assert len(callback.record.steps) < STEPS  # stopped early, not at the end


def test_budget_through_the_callback_logs_the_summaries_of_the_steps_it_recorded(tmp_path):
    torch.manual_seed(0)
    module = Classifier(deep_sigmoid())
    hooks_before = all_hooks(module)
    callback = GradscopeCallback(budget=0.02, path=tmp_path / "run.gsrun")
    trainer = _fit(module, callback, batches(STEPS * ACCUMULATE), tmp_path)
    record = callback.record
    # A recorded step of this tiny model costs about a step: far above 2 %, so few are recorded.
    assert record.steps[0] == 0 and len(record.steps) < STEPS and len(record.intervals) == len(record.steps)
    assert any(n.startswith("Overhead budget 2 %") for n in record.meta.notes)
    with open(trainer.logger.log_dir + "/metrics.csv", newline="") as handle:
        logged = [int(r["step"]) for r in csv.DictReader(handle) if r.get("gradscope/grad_norm_total")]
    assert logged == record.steps  # the callback learned which steps were recorded from the watcher
    assert all_hooks(module) == hooks_before


def test_a_bad_budget_is_refused_when_the_callback_is_made():
    from gradscope.errors import ConfigError

    with pytest.raises(ConfigError, match="`budget` must be a number above 0 and at most 1"):
        GradscopeCallback(budget=0)


class _DeferringCallback(GradscopeCallback):
    """The callback with the GPU's deferred copies forced on a CPU (see tests/capture/test_deferred_copy.py)."""

    def on_fit_start(self, trainer, pl_module) -> None:
        super().on_fit_start(trainer, pl_module)
        self.session.watcher._defer_copies = True


def test_with_deferred_copies_every_recorded_step_still_reaches_the_logger(tmp_path):
    """On a GPU a step reaches the record a step after it ended (the callback never waits for it);
    the last ones are logged at the end of the fit."""
    torch.manual_seed(0)
    module = Classifier(deep_sigmoid())
    callback = _DeferringCallback()
    steps = STEPS - 1  # odd: the last step is still on its way when the fit ends
    trainer = _fit(module, callback, batches(steps * ACCUMULATE), tmp_path, steps=steps)
    with open(trainer.logger.log_dir + "/metrics.csv", newline="") as handle:
        logged = [int(r["step"]) for r in csv.DictReader(handle) if r.get("gradscope/grad_norm_total")]
    assert callback.record.steps == list(range(steps))
    assert sorted(logged) == list(range(steps))
