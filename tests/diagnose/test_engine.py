"""The generic engine: skipping rules whose inputs are missing, ordering, robustness; helpers."""

from __future__ import annotations

import math

import pytest

import gradscope
from gradscope.diagnose import ALL_RULES
from gradscope.diagnose.advice import unnormalized_pairs
from gradscope.diagnose.engine import run_rules
from gradscope.diagnose.finding import Finding, severity_rank
from gradscope.diagnose.numbers import compact, percent
from gradscope.diagnose.reading import module_expr
from gradscope.diagnose.rule import Rule
from gradscope.record import HookError, ModuleInfo, RunRecord
from tests.test_text_report import hand_built_record


def test_findings_are_ordered_most_severe_first_and_deterministic():
    first = gradscope.diagnose(hand_built_record())
    again = gradscope.diagnose(hand_built_record())
    assert first.findings == again.findings
    ranks = [severity_rank(f.severity) for f in first]
    assert ranks == sorted(ranks, reverse=True)
    assert first.codes() == ["vanishing-gradients", "dead-relu", "overfitting", "amp-overflow", "no-gradient", "rule-skipped"]
    assert first.worst_severity() == "error"


class _NeedsEverything(Rule):
    name = "dead_relu"  # borrows a config section; the engine only reads `enabled`
    code = "test-rule"
    label = "Test checks"
    needs = ("act_dead_frac", ("update_ratio", "grad_rms"))
    needs_scalars = ("val_loss",)

    def check(self, record, settings):  # pragma: no cover - must never run without its inputs
        raise AssertionError("check ran although its inputs are missing")


def test_a_rule_with_missing_inputs_is_reported_skipped_and_never_run():
    record = hand_built_record()
    record.scalars.pop("val_loss")
    for stats in record.layer_stats.values():
        stats.pop("act_dead_frac", None)
    [finding] = run_rules(record, gradscope.load_config(), [_NeedsEverything()])
    assert finding.code == "rule-skipped" and finding.severity == "info"
    assert finding.evidence == {"rule": "dead_relu", "missing_statistics": ["act_dead_frac"], "missing_scalars": ["val_loss"]}
    assert "'act_dead_frac'" in finding.message and "run.log(val_loss=...)" in finding.message


def test_a_disabled_rule_says_nothing():
    record = hand_built_record()
    assert run_rules(record, gradscope.load_config().merged({"dead_relu": {"enabled": False}}), [_NeedsEverything()]).findings == []


def _odd_records():
    empty = RunRecord()
    lone = RunRecord(modules=[ModuleInfo("fc", "Linear", 10, ["fc.weight"], 10)])
    lone.append_step(0, {"fc": {"grad_norm": None, "backprop_norm": None}}, {"fc.weight": {"grad_norm": None}})
    nan = hand_built_record()
    for stats in nan.layer_stats.values():
        for values in stats.values():
            values[:] = [math.nan] * len(values)
    nan.hook_errors.append(HookError("forward:fc", "ValueError: boom", 3, 0))
    zeros = hand_built_record()
    for stats in zeros.layer_stats.values():
        for values in stats.values():
            values[:] = [0.0] * len(values)
    flat_val = hand_built_record()
    flat_val.scalars["val_loss"] = [(s, 0.0) for s, _ in flat_val.scalars["val_loss"]]
    return {"empty": empty, "lone": lone, "nan": nan, "zeros": zeros, "flat_val": flat_val}


@pytest.mark.parametrize("name", list(_odd_records()))
def test_odd_records_never_crash_the_rules(name):
    record = _odd_records()[name]
    diagnosis = gradscope.diagnose(record)
    assert all(isinstance(f, Finding) and f.severity in ("info", "warning", "error") for f in diagnosis)
    if name == "nan":
        assert "nonfinite" in diagnosis.codes() and "hook-errors" in diagnosis.codes()


def test_every_rule_has_a_unique_name_and_code():
    assert len({r.name for r in ALL_RULES}) == len(ALL_RULES) == len({r.code for r in ALL_RULES})


def test_module_expr_reaches_modules_by_qualified_name():
    import torch.nn as nn

    model = nn.Module()
    model.layers = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU()))
    model.add_module("odd-name", nn.Tanh())
    for name in ("layers.0", "layers.1.0", "odd-name", ""):
        assert eval(module_expr(name), {"model": model}) is model.get_submodule(name)


def test_unnormalized_pairs_skip_layers_that_already_have_a_norm():
    record = RunRecord(
        modules=[
            ModuleInfo("a", "Linear", 1, ["a.weight"]),
            ModuleInfo("a_act", "ReLU", 0, activation="relu"),
            ModuleInfo("b", "Conv2d", 1, ["b.weight"]),
            ModuleInfo("b_bn", "BatchNorm2d", 1, ["b_bn.weight"]),
            ModuleInfo("b_act", "ReLU", 0, activation="relu"),
            ModuleInfo("c", "Conv1d", 1, ["c.weight"]),
            ModuleInfo("drop", "Dropout", 0),
            ModuleInfo("c_act", "Tanh", 0, activation="tanh"),
            ModuleInfo("head", "Linear", 1, ["head.weight"]),
        ]
    )
    assert [(layer.name, act.name) for layer, act in unnormalized_pairs(record)] == [("a", "a_act"), ("c", "c_act")]


def test_compact_numbers():
    assert [compact(v) for v in (None, 0.0, 0.0123, 3.14159, 1234.5, 1.234e-7, 2.5e6, math.nan, -math.inf, 7)] == [
        "-", "0", "0.0123", "3.14", "1.23e+03", "1.2e-07", "2.5e+06", "nan", "-inf", "7"
    ]
    assert [percent(v) for v in (None, 0.0, 0.004, 0.5, 1.0)] == ["-", "0%", "<1%", "50%", "100%"]
