"""RunRecord: JSON round trip and clear errors for damaged files."""

from __future__ import annotations

import json
import math
import os
import stat

import pytest
import torch

import gradscope
from gradscope.errors import RecordFormatError, UnknownSeriesError
from gradscope.record import RunRecord

from .models import classification_batches, mlp, train_steps


@pytest.fixture(scope="module")
def record() -> RunRecord:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradscope.watch(model, optimizer=opt) as run:
        train_steps(model, opt, classification_batches(3), run=run)
    return run.record


def test_round_trip_is_exact(record, tmp_path):
    record.layer_stats["0"]["grad_norm"][1] = math.inf  # non-finite values survive too
    record.layer_stats["0"]["act_mean"][2] = math.nan
    path = record.save(tmp_path / "run.json")
    loaded = RunRecord.load(path)
    assert loaded.layer_stats["0"]["grad_norm"][1] == math.inf
    assert math.isnan(loaded.layer_stats["0"]["act_mean"][2])
    record.layer_stats["0"]["act_mean"][2] = 0.5
    loaded.layer_stats["0"]["act_mean"][2] = 0.5
    assert loaded == record
    json.loads(path.read_text())  # strict JSON: no NaN/Infinity literals


def test_header_fields(record, tmp_path):
    data = json.loads(record.save(tmp_path / "r.json").read_text())
    assert data["schema_version"] == 1
    assert data["meta"]["torch_version"] == torch.__version__
    assert data["meta"]["gradscope_version"] == gradscope.__version__
    assert data["meta"]["model_class"] == "Sequential"
    assert [m["name"] for m in data["modules"]] == record.layers


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('{"schema_version": 1, "meta": {}', "not valid JSON"),
        ("[1, 2]", "not a gradscope run record"),
        ('{"schema_version": 99}', "schema version 99"),
        ('{"schema_version": 1, "meta": {"bogus": 1}}', "damaged"),
    ],
)
def test_damaged_files_raise_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(RecordFormatError, match=message):
        RunRecord.load(path)


def test_missing_file_and_unknown_series(record, tmp_path):
    with pytest.raises(RecordFormatError, match="does not exist"):
        RunRecord.load(tmp_path / "nope.json")
    with pytest.raises(UnknownSeriesError, match="Unknown statistic 'grad_nrom'"):
        record.series("grad_nrom", "0")
    with pytest.raises(UnknownSeriesError, match="No layer or parameter named 'fc9'"):
        record.series("grad_norm", "fc9")
    assert record.scalar_series("loss")[0] == [0, 1, 2]


def test_save_is_atomic(record, tmp_path):
    target = tmp_path / "run.json"
    target.write_text("previous contents")
    record.meta.options["unserialisable"] = object()
    try:
        with pytest.raises(TypeError):
            record.save(target)
    finally:
        del record.meta.options["unserialisable"]
    assert target.read_text() == "previous contents"
    assert list(tmp_path.iterdir()) == [target]


def test_failed_rename_leaves_no_temporary_file(record, tmp_path):
    blocked = tmp_path / "run.json"
    blocked.mkdir()
    (blocked / "inside").write_text("x")  # a non-empty directory cannot be replaced by a file
    with pytest.raises(OSError):
        record.save(blocked)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_saved_files_get_ordinary_permissions(record, tmp_path):
    old = os.umask(0o022)
    try:
        path = record.save(tmp_path / "run.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
