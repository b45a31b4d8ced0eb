"""Rules judge growth, update ratios and the loss trend with the optimizer in mind, not absolute sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradscope
from gradscope.diagnose.reading import loss_trend, optimizer_is_scale_free
from gradscope.record import ModuleInfo, RunMeta, RunRecord
from tests.diagnose.builders import batches, classification_data, stack, train


def _summed(outputs, targets):
    return nn.functional.mse_loss(outputs, targets, reduction="sum")  # over the batch and the outputs


@pytest.fixture(scope="module")
def data():
    """A regression with 32 outputs (the sum runs over 256 x 32 terms, as a VAE's over pixels)."""
    x, _ = classification_data(512, features=16)
    teacher = torch.randn(16, 32, generator=torch.Generator().manual_seed(7))
    return x, torch.tanh(x @ teacher / 4) * 3


def _adam_run(data, loss_fn):
    torch.manual_seed(0)
    model = stack([16, 64, 64, 32], nn.ReLU)
    return train(model, batches(*data, 256, 12), optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), loss_fn=loss_fn)


def test_a_loss_summed_over_the_batch_trains_adam_exactly_as_the_mean_and_raises_nothing(data):
    summed, mean = _adam_run(data, _summed), _adam_run(data, nn.functional.mse_loss)
    # the same training (Adam divides the factor out; its epsilon leaves a tiny trace) ...
    assert summed.series("grad_norm", "0")[0] == pytest.approx(256 * 32 * mean.series("grad_norm", "0")[0], rel=1e-5)
    assert summed.series("update_ratio", "4")[-1] == pytest.approx(mean.series("update_ratio", "4")[-1], rel=1e-3)
    # ... far above the absolute 1,000 that used to trigger a finding, and the same diagnosis
    assert max(summed.series("grad_norm", "4")) > 1000 > max(mean.series("grad_norm", "4"))  # the head
    assert gradscope.diagnose(summed).codes() == gradscope.diagnose(mean).codes() == ["rule-skipped"]


def test_sgd_on_a_summed_loss_takes_steps_that_large_and_is_told_so(data):
    # SGD turns the 8192x larger gradient into an 8192x larger step: lr 5e-4 here is lr 4 on the mean
    torch.manual_seed(0)
    model = stack([16, 64, 64, 32], nn.ReLU)
    record = train(model, batches(*data, 256, 6), optimizer=torch.optim.SGD(model.parameters(), lr=5e-4), loss_fn=_summed)
    finding = next(f for f in gradscope.diagnose(record) if f.code == "exploding-gradients")
    assert finding.evidence["optimizer_normalises_gradient_scale"] is False
    moving = finding.evidence["median_update_ratio"]
    assert moving and all(moving[n] > 0.1 for n in finding.layers)
    assert finding.evidence["max_grad_norm"] > 1000
    # the evidence lists the per-layer values it summarises
    assert set(finding.evidence["grad_norm_per_layer"]) == {"0", "2", "4"}
    # the clipping threshold suggested is on the model's own scale, not 1.0
    assert "max_norm=1.0)" not in finding.snippet and "clip_grad_norm_" in finding.snippet


def test_optimizers_are_told_apart_by_whether_they_normalise_gradient_scale():
    def kind(name):
        return optimizer_is_scale_free(RunRecord(meta=RunMeta(optimizer=name)))

    assert [kind(n) for n in ("Adam", "AdamW", "Adagrad", "RMSprop", "Adadelta")] == [True] * 5
    assert [kind(n) for n in ("SGD", "ASGD")] == [False, False]
    assert [kind(n) for n in (None, "AcceleratedOptimizer", "Adam, SGD")] == [None, None, None]
    assert kind("Adam, AdamW") is True  # several optimizers of one kind (a GAN's)


def _hand_record(grad_norm, update_ratio, losses, modules=None):
    modules = modules or [ModuleInfo("fc", "Linear", 10, ["fc.weight"], 10), ModuleInfo("head", "Linear", 10, ["head.weight"], 10)]
    record = RunRecord(meta=RunMeta(optimizer="SGD"), modules=modules)
    for step, loss in enumerate(losses):
        values = {m.name: {"grad_norm": grad_norm, "update_ratio": update_ratio, "weight_norm": 1.0} for m in modules if m.num_params}
        record.append_step(step, values, {})
        record.log_scalar(step, "loss", loss)
    return record


def test_huge_updates_while_the_loss_falls_are_reported_but_not_warned_about():
    falling = gradscope.diagnose(_hand_record(0.5, 0.3, [4.0 - 0.1 * s for s in range(8)]))
    rising = gradscope.diagnose(_hand_record(0.5, 0.3, [4.0 + 0.5 * s for s in range(8)]))
    [calm] = [f for f in falling if f.code == "update-ratio-high"]
    [loud] = [f for f in rising if f.code == "update-ratio-high"]
    assert calm.severity == "info" and "fell from 4 to" in calm.message
    assert loud.severity == "warning" and "rose from 4 to" in loud.message
    assert loud.evidence["loss_first"] == 4.0


def test_tiny_updates_point_only_at_findings_that_exist():
    alone = gradscope.diagnose(_hand_record(0.0, 0.0, [1.0] * 8))
    [finding] = [f for f in alone if f.code == "update-ratio-low"]
    assert "see the" not in finding.recommendation and "finding" not in finding.recommendation
    assert "not the cause" in finding.recommendation  # a gradient of exactly 0: true whatever else was found

    modules = [
        ModuleInfo("fc", "Linear", 10, ["fc.weight"], 10),
        ModuleInfo("act", "ReLU", 0, activation="relu"),
        ModuleInfo("head", "Linear", 10, ["head.weight"], 10),
    ]
    record = _hand_record(0.0, 0.0, [1.0] * 8, modules)
    record.layer_stats["act"] = {"act_dead_frac": [1.0] * 8}
    diagnosis = gradscope.diagnose(record)
    assert "dead-relu" in diagnosis.codes()
    [finding] = [f for f in diagnosis if f.code == "update-ratio-low"]
    assert "(see the dead-unit finding)" in finding.recommendation


def test_loss_trend_reads_the_first_value_and_the_last_quarter():
    record = RunRecord()
    for step, value in enumerate([5.0, 1.0, 1.0, 1.0, 2.0, 2.0, 3.0, 4.0]):
        record.log_scalar(step, "loss", value)
    trend = loss_trend(record)
    assert (trend.first, trend.late) == (5.0, 3.5) and trend.fell and not trend.rose(0.5)
    record.log_scalar(8, "loss", float("nan"))
    assert loss_trend(record).rose(0.5) and not loss_trend(record).fell
