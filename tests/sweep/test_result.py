"""gradscope.sweep end to end: records, summaries, JSON, table, bad options, failures, workers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import gradscope
from gradscope.errors import GradscopeError, RecordFormatError
from gradscope.report import sweep_table
from gradscope.sweep import (
    ConfigSummary,
    SweepData,
    SweepOptionError,
    SweepResult,
    UnknownConfigError,
    fit_decay_factor,
)
from gradscope.sweep.reading import describe


@pytest.fixture(scope="module")
def small():
    return gradscope.sweep(activations=("sigmoid", "relu"), depths=(2, 3), init="default", steps=4, workers=1)


def test_find_returns_the_watched_record_of_that_network(small):
    record = small.find(activation="relu", depth=3, norm="none", dropout=0.0)
    assert isinstance(record, gradscope.RunRecord)
    assert record.layers == ["fc1", "act1", "fc2", "act2", "fc3", "act3", "head"]
    assert record.module("act2").activation == "relu"
    assert record.steps == [0, 1, 2, 3]
    assert record.meta.options["sweep"]["depth"] == 3
    steps, losses = record.scalar_series("loss")
    assert steps == [0, 1, 2, 3] and all(np.isfinite(losses))
    assert len(record.scalar_series("val_loss")[1]) == 4


def test_summary_numbers_come_from_the_record(small):
    summary = small.summary("sigmoid", 3)
    record = small.find("sigmoid", 3)
    assert summary.backprop.init == [record.series("backprop_norm", f"act{i}")[0] for i in (1, 2, 3)]
    assert summary.backprop.final == [record.series("backprop_norm", f"act{i}")[-1] for i in (1, 2, 3)]
    assert summary.grad_rms.init == [record.series("grad_rms", f"fc{i}")[0] for i in (1, 2, 3)]
    assert summary.first_last_ratio_init == pytest.approx(summary.backprop.init[0] / summary.backprop.init[2])
    assert summary.decay_factor_init == pytest.approx(fit_decay_factor(summary.backprop.init))
    assert summary.steps_done == 4 and summary.error is None
    assert 0 <= summary.val_accuracy <= 1 and summary.train_loss > 0
    assert [c.key for c in small.configs] == [
        ("sigmoid", 2, "none", 0.0, "default"), ("sigmoid", 3, "none", 0.0, "default"),
        ("relu", 2, "none", 0.0, "default"), ("relu", 3, "none", 0.0, "default")]


def test_decay_factor_fit_on_a_known_geometric_signal():
    assert fit_decay_factor([0.25**3, 0.25**2, 0.25, 1.0]) == pytest.approx(0.25)
    assert fit_decay_factor([0.0, 0.0, 0.5, 1.0]) == pytest.approx(0.5)  # underflowed layers are left out
    assert fit_decay_factor([1.0]) is None
    assert fit_decay_factor([None, 1.0]) is None
    assert fit_decay_factor([float("nan"), 1.0]) is None


def test_unknown_configuration_says_what_ran(small):
    with pytest.raises(UnknownConfigError, match="did not run activation='tanh'.*It ran: sigmoid, depth 2"):
        small.find("tanh", 2)
    assert isinstance(UnknownConfigError("x"), GradscopeError)


def test_json_round_trip_keeps_summaries_and_records(small, tmp_path):
    path = small.save(tmp_path / "sweep.json")
    loaded = SweepResult.load(path)
    assert [s.to_dict() for s in loaded.summaries] == [s.to_dict() for s in small.summaries]
    assert loaded.find("relu", 2).to_dict() == small.find("relu", 2).to_dict()
    assert isinstance(loaded.summaries[0], ConfigSummary) and loaded.options == small.options
    assert sweep_table(loaded) == sweep_table(small)


def test_damaged_json_files_are_format_errors(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(RecordFormatError, match="not valid JSON"):
        SweepResult.load(tmp_path / "bad.json")
    (tmp_path / "run.json").write_text('{"schema_version": 1}')
    with pytest.raises(RecordFormatError, match="not a gradscope sweep result"):
        SweepResult.load(tmp_path / "run.json")
    (tmp_path / "cut.json").write_text('{"format": "gradscope-sweep", "version": 1, "summaries": []}')
    with pytest.raises(RecordFormatError, match="damaged"):
        SweepResult.load(tmp_path / "cut.json")
    with pytest.raises(RecordFormatError, match="does not exist"):
        SweepResult.load(tmp_path / "missing.json")


def test_table_has_one_row_per_configuration(small):
    lines = sweep_table(small).splitlines()
    assert len(lines) == 3 + 4  # two header lines, the rule, four rows
    row = next(line for line in lines if line.split()[:2] == ["sigmoid", "3"])
    assert f"{small.summary('sigmoid', 3).first_last_ratio_init:.2g}" in row


@pytest.mark.parametrize(
    "options,phrase",
    [
        (dict(activations=("softmax",)), "Unknown activation 'softmax'"),
        (dict(depths=(0,)), "depth must be a whole number >= 1"),
        (dict(depths=(2.5,)), "depth must be a whole number"),
        (dict(dropouts=(1.0,)), "0 <= p < 1"),
        (dict(norms=("layernorm",)), "Unknown norm"),
        (dict(init="orthogonal"), "Unknown init"),
        (dict(lr=-1.0), "lr must be a positive number"),
        (dict(steps=0), "steps must be a whole number >= 1"),
        (dict(activations=()), "at least one activation"),
        (dict(workers=0), "workers"),
    ],
)
def test_bad_options_raise_before_any_training(options, phrase):
    with pytest.raises(SweepOptionError, match=phrase):
        gradscope.sweep(**{"depths": (2,), "steps": 1, **options})


def test_a_diverging_configuration_is_reported_and_the_others_still_run():
    result = gradscope.sweep(activations=("identity", "tanh"), depths=(4,), init="kaiming", lr=1e4, steps=20, workers=1)
    identity, tanh = result.summary("identity", 4), result.summary("tanh", 4)
    assert identity.error.startswith("the training loss became nan at step")
    assert identity.steps_done < 20
    assert identity.backprop.init and identity.first_last_ratio_init is not None  # the init statistics survive
    assert tanh.error is None and tanh.steps_done == 20  # tanh's bounded outputs keep the loss finite
    assert result.failures == [identity]
    assert any(line.startswith("Failed: identity, depth 4: the training loss became nan") for line in describe(result))
    assert "loss became nan" in sweep_table(result)
    loaded = SweepResult.from_dict(json.loads(result.to_json()))  # strict JSON: NaN is stored as "nan"
    assert loaded.summary("identity", 4).error == identity.error
    assert np.isnan(loaded.summary("identity", 4).train_loss)


def test_progress_is_reported_once_per_configuration():
    calls = []
    gradscope.sweep(activations=("relu", "tanh"), depths=(1, 2), init="default", steps=1, workers=1,
                    progress=lambda done, total, summary: calls.append((done, total, summary and summary.config.label)))
    assert [(d, t) for d, t, _ in calls] == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    assert calls[0][2] is None and calls[1][2] == "relu, depth 1"


def test_the_callers_random_state_is_left_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    gradscope.sweep(activations=("relu",), depths=(2,), dropouts=(0.5,), steps=2, workers=1)
    assert torch.equal(torch.rand(3), expected)


def test_parallel_workers_give_the_same_numbers_as_one_process():
    options = dict(activations=("sigmoid", "relu"), depths=(2, 3), steps=3)
    here = gradscope.sweep(**options, workers=1)
    pooled = gradscope.sweep(**options, workers=2)
    assert pooled.workers == 2
    for a, b in zip(here.summaries, pooled.summaries):
        assert a.config == b.config
        assert a.backprop.init == b.backprop.init and a.val_loss == b.val_loss


def test_user_data_sets_the_network_shape():
    rng = np.random.default_rng(0)
    data = SweepData(X=rng.normal(size=(40, 5)).astype(np.float32), y=(np.arange(40) % 3).astype(np.int64),
                     X_val=rng.normal(size=(10, 5)).astype(np.float32), y_val=(np.arange(10) % 3).astype(np.int64),
                     num_classes=3, description="tiny")
    result = gradscope.sweep(activations=("relu",), depths=(2,), init="default", steps=2, data=data, workers=1)
    assert result.data_description == "tiny"
    assert result.find("relu", 2).meta.num_params == (5 * 64 + 64) + (64 * 64 + 64) + (64 * 3 + 3)


@pytest.fixture(scope="module")
def both_inits():
    return gradscope.sweep(activations=("relu",), depths=(2,), steps=2, workers=1)


def test_the_default_sweep_runs_each_network_at_both_inits_and_find_selects_one(both_inits):
    assert both_inits.inits == ["default", "recommended"] and both_inits.options["inits"] == ["default", "recommended"]
    default = both_inits.find("relu", 2, init="default")
    recommended = both_inits.find("relu", 2, init="recommended")
    assert default.meta.options["sweep"]["init"] == "default"
    assert recommended.meta.options["sweep"]["init"] == "recommended"
    assert both_inits.summary("relu", 2, init="recommended").config.init == "recommended"
    with pytest.raises(UnknownConfigError, match=r"ran relu, depth 2 at several inits \(default, recommended\); "
                                                 r"say which one, e.g. init='recommended'"):
        both_inits.find("relu", 2)
    with pytest.raises(UnknownConfigError, match="did not run .*init='xavier'. It ran: relu, depth 2, default init"):
        both_inits.find("relu", 2, init="xavier")


def test_a_version_1_sweep_file_still_loads(both_inits):
    data = json.loads(both_inits.to_json())
    data["version"] = 1
    for summary in data["summaries"]:
        del summary["first_loss"], summary["chance_loss"]
    loaded = SweepResult.from_dict(data)
    for old, new in zip(loaded.summaries, both_inits.summaries):
        assert old.first_loss == new.first_loss  # read back from the record's logged loss
        assert old.chance_loss is None and old.outcome in ("trained", "did not train", "diverged")
    data["version"] = 3
    with pytest.raises(RecordFormatError, match="version 3; this gradscope reads versions 1, 2"):
        SweepResult.from_dict(data)
