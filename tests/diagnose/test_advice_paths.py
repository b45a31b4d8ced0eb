"""Advice branches that depend on what the record shows, on small hand-built records."""

from __future__ import annotations

import gradscope
from gradscope.record import ModuleInfo, RunRecord


def _record(modules, steps=8, layer_values=None, scalars=None):
    record = RunRecord(modules=modules)
    for step in range(steps):
        values = layer_values(step) if layer_values else {}
        record.append_step(step, values, {})
    for name, series in (scalars or {}).items():
        for step, value in series:
            record.log_scalar(step, name, value)
    return record


MLP_WITH_DROPOUT = [
    ModuleInfo("fc", "Linear", 10, ["fc.weight"], 10),
    ModuleInfo("act", "ReLU", 0, activation="relu"),
    ModuleInfo("drop", "Dropout", 0),
    ModuleInfo("head", "Linear", 10, ["head.weight"], 10),
]


def test_wide_gap_alone_is_overfitting_and_existing_dropout_is_raised():
    # validation still improving, but far above the training loss
    train = [(s, 1.0 / (s + 1) ** 2) for s in range(8)]
    val = [(s, 2.0 - 0.01 * s) for s in range(1, 8, 2)]
    record = _record(MLP_WITH_DROPOUT, scalars={"loss": train, "val_loss": val})
    [finding] = [f for f in gradscope.diagnose(record) if f.code == "overfitting"]
    assert finding.evidence["relative_gap"] > 0.6 and finding.evidence["best_val_step"] == 7
    assert "above training loss" in finding.title
    assert finding.layers == ["drop"] and "model.drop.p = min(0.8, model.drop.p + 0.2)" in finding.snippet
    compile(finding.snippet, "<snippet>", "exec")


def test_rising_too_briefly_is_not_overfitting():
    train = [(s, 1.0 - 0.05 * s) for s in range(8)]
    val = [(s, v) for s, v in zip(range(8), [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.55, 0.6])]  # 2 points up, not 3
    record = _record(MLP_WITH_DROPOUT, scalars={"loss": train, "val_loss": val})
    assert "overfitting" not in gradscope.diagnose(record).codes()
    stricter = gradscope.diagnose(record, {"overfitting": {"rising_points": 2}})
    assert "overfitting" in stricter.codes()


def test_frozen_batchnorm_in_eval_mode_is_info_not_warning():
    modules = [
        ModuleInfo("conv", "Conv2d", 10, ["conv.weight"], 10),
        ModuleInfo("bn", "BatchNorm2d", 4, ["bn.weight", "bn.bias"], 0),  # frozen on purpose
        ModuleInfo("act", "ReLU", 0, activation="relu"),
    ]
    record = _record(modules, layer_values=lambda s: {"bn": {"act_calls": 0.0, "act_eval_calls": 1.0, "act_batch": 32.0}})
    [finding] = [f for f in gradscope.diagnose(record) if f.code == "batchnorm-eval-only"]
    assert finding.severity == "info" and finding.layers == ["bn"]
