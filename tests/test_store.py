"""The run store: exact round trips with JSON, a live reader, flat memory, clear errors."""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from gradscope.columns import Column
from gradscope.errors import RecordFormatError, StoreError
from gradscope.record import HookError, ModuleInfo, RunMeta, RunRecord
from gradscope.store import STORE_SCHEMA_VERSION, StoreWriter

ROOT = Path(__file__).resolve().parents[1]


def odd_record(measured: bool) -> RunRecord:
    """Every kind of value a record can hold: None, NaN, +-Inf, values float32 would change
    (1e-50, 1e300, 0.1), a series that starts late, a scalar logged twice in one step."""
    record = RunRecord(
        meta=RunMeta(model_class="Odd", every=2, options={"lr": 0.1, "include": None}, notes=["a note"]),
        modules=[
            ModuleInfo("fc", "Linear", 6, ["fc.weight", "fc.bias"], 6),
            ModuleInfo("act", "ReLU", 0, activation="relu"),
            ModuleInfo("inf", "Linear", 2, ["inf.weight"], 0, executed=False),
        ],
        hook_errors=[HookError("forward:fc", "ValueError: boom", count=3, first_step=4)],
    )
    specials = [None, math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-50, 1e300, 0.1, 3.5]
    for index in range(40):
        step = 2 * index
        value = specials[index % len(specials)]
        layers = {"fc": {"grad_norm": value, "act_mean": index / 3}, "act": {"act_dead_frac": 1 / (index + 1)}}
        if index >= 25:
            layers["act"]["backprop_norm"] = float(index)  # a series that appears late
        params = {"fc.weight": {"grad_norm": value}, "fc.bias": {}} if index % 5 else {}
        record.append_step(step, layers, params, skipped=index in (3, 17), measured=measured)
        record.log_scalar(step, "loss", 2.0 / (index + 1))
        record.log_scalar(step, "loss", [math.nan, math.inf, 1.5][index % 3])  # the last value wins
        if index % 10 == 0:
            record.log_scalar(step, "val_loss", -math.inf if index == 20 else 0.25)
    return record


@pytest.mark.parametrize("measured", [False, True])
def test_json_and_store_round_trips_are_exact(tmp_path, measured):
    original = odd_record(measured)
    via_store = RunRecord.load(original.save(tmp_path / "a.gsrun"))
    assert via_store.to_json() == original.to_json()  # same text: same values, same order
    via_json = RunRecord.load(original.save(tmp_path / "a.json"))
    again = RunRecord.load(via_json.save(tmp_path / "b.gsrun"))
    assert again.to_json() == original.to_json()
    fc = again.layer_stats["fc"]["grad_norm"]
    assert fc[0] is None and math.isnan(fc[1]) and fc[2] == math.inf and fc[3] == -math.inf
    assert math.copysign(1, fc[5]) == -1  # -0.0 kept
    assert again.scalars["loss"][1] == (2, math.inf) and math.isnan(again.scalars["loss"][0][1])
    assert again.layer_stats["act"]["backprop_norm"][:26] == [None] * 25 + [25.0]


def test_measured_values_are_float32_except_where_float32_would_change_them(tmp_path):
    record = odd_record(measured=True)
    fc = record.layer_stats["fc"]["grad_norm"]
    assert fc[8] == float(np.float32(0.1)) != 0.1  # float32, the precision the device measured in
    assert fc[6] == 1e-50 and fc[7] == 1e300  # would underflow / overflow in float32: kept
    path = record.save(tmp_path / "m.gsrun")
    with sqlite3.connect(path) as db:  # any SQLite reader sees the layout the module documents
        rows = db.execute("SELECT count(*), count(wide_blob) FROM steps").fetchone()
        catalog = db.execute("SELECT kind, name, stat FROM series ORDER BY col").fetchall()
    assert rows == (40, 8)  # only the rows holding 1e-50 or 1e300 need float64
    assert catalog[:3] == [("layer", "fc", "grad_norm"), ("layer", "fc", "act_mean"), ("layer", "act", "act_dead_frac")]


def test_column_behaves_like_the_list_it_replaces():
    column = Column([1.0, None, math.nan])
    for value in [0.5] * 300 + [None]:
        column.append_measured(value)
    assert len(column) == 304 and column[-1] is None and column[3] == 0.5
    column[1] = 1e-300  # exact, the column widens to float64
    assert column[1] == 1e-300 and column[0] == 1.0
    assert column[3:] == [0.5] * 300 + [None] and math.isnan(column[2])
    assert Column([1.0, None]) == [1.0, None] != Column([1.0, 0.0])
    assert column.nbytes <= 10 * 304 * 1.5
    packed = Column()
    for value in range(10_000):
        packed.append_measured(float(value))
    assert packed.nbytes / len(packed) <= 10  # float32 + mask, with room to grow


def test_a_reader_sees_committed_steps_while_the_writer_runs(tmp_path):
    path = tmp_path / "live.gsrun"
    writer = StoreWriter(path, RunMeta(model_class="Live"))
    try:
        for step in range(50):
            writer.append_step(step, {"fc": {"grad_norm": float(step)}}, {}, measured=True)
        time.sleep(1.2)  # the writer thread commits every half second
        live = RunRecord.load(path)
        assert live.steps == list(range(50))
        assert live.layer_stats["fc"]["grad_norm"][-1] == 49.0
        assert live.meta.model_class == "Live"
    finally:
        writer.close()
    assert RunRecord.load(path).steps == list(range(50))
    assert not Path(f"{path}-wal").exists()  # a closed store is one file


def test_memory_stays_flat_while_a_store_is_written(tmp_path):
    """Resident memory after 1,000 and after 10,000 steps of 300 values each (120 MB as Python
    floats in lists, 13 MB as compact columns) differs by less than 4 MB: the steps go to disk. The steps are
    synthetic rows handed to the writer directly (tests/capture/test_watch_store.py trains)."""
    script = textwrap.dedent(
        f"""
        import numpy as np
        from gradscope.record import RunMeta
        from gradscope.store import StoreWriter

        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096

        writer = StoreWriter({str(tmp_path / "flat.gsrun")!r}, RunMeta())
        for i in range(30):
            for j in range(10):
                writer.add_series("layer", f"layers.{{i}}", f"s{{j}}")
        rng = np.random.default_rng(0)
        measured = np.ones(300, bool)
        marks = {{}}
        for step in range(10_000):
            writer.append_packed(step, rng.random(300), measured, measured=True)
            if step + 1 in (1_000, 10_000):
                writer.flush()
                marks[step + 1] = rss()
        writer.close()
        print(marks[1_000], marks[10_000])
        """
    )
    if not Path("/proc/self/statm").exists():
        pytest.skip("reads resident memory from /proc (Linux)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    at_1k, at_10k = map(int, out.stdout.split())
    assert at_10k - at_1k < 4 * 2**20, f"grew {(at_10k - at_1k) / 2**20:.1f} MB from 1,000 to 10,000 steps"
    stored = RunRecord.load(tmp_path / "flat.gsrun")
    assert len(stored.steps) == 10_000 and len(stored.layer_stats) == 30
    assert os.path.getsize(tmp_path / "flat.gsrun") / (10_000 * 300) < 5  # bytes a value on disk (the goal: at most 6)


# ---- bad input ---------------------------------------------------------------------------------
def test_a_missing_folder_is_refused_and_nothing_is_created(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        StoreWriter(tmp_path / "no" / "such" / "run.gsrun", RunMeta())
    assert not (tmp_path / "no").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="does not exist"):
        StoreWriter(tmp_path / "file" / "run.gsrun", RunMeta())


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_folder_is_refused(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(StoreError, match="permission"):
            StoreWriter(folder / "run.gsrun", RunMeta())
    finally:
        folder.chmod(0o700)
    assert list(folder.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs a folder nobody can create files in (/proc)")
def test_a_folder_the_system_refuses_is_refused():
    with pytest.raises(StoreError, match="Cannot write the run store"):
        StoreWriter("/proc/gradscope-run.gsrun", RunMeta())


def test_a_file_that_is_not_a_store_is_never_overwritten(tmp_path):
    text = tmp_path / "notes.gsrun"
    text.write_text("my notes")
    with pytest.raises(StoreError, match="not a gradscope run store"):
        StoreWriter(text, RunMeta())
    assert text.read_text() == "my notes"
    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE t (x)")
    before = foreign.read_bytes()
    with pytest.raises(StoreError, match="not a gradscope run store"):
        StoreWriter(foreign, RunMeta())
    named_like_a_store = tmp_path / "other.gsrun"
    named_like_a_store.write_bytes(before)
    with pytest.raises(StoreError, match="not a gradscope run store"):
        odd_record(True).save(named_like_a_store)
    assert foreign.read_bytes() == before == named_like_a_store.read_bytes()
    with pytest.raises(RecordFormatError, match="not a gradscope run store"):
        RunRecord.load(foreign)


def test_a_store_from_a_newer_gradscope_is_refused(tmp_path):
    path = odd_record(True).save(tmp_path / "new.gsrun")
    with sqlite3.connect(path) as db:
        db.execute("UPDATE info SET value = ? WHERE key = 'schema_version'", (str(STORE_SCHEMA_VERSION + 1),))
    db.close()
    with pytest.raises(RecordFormatError, match="store schema version 2"):
        RunRecord.load(path)
    with pytest.raises(StoreError, match="newer gradscope"):
        StoreWriter(path, RunMeta())


def test_two_writers_on_one_path_are_refused(tmp_path):
    path = tmp_path / "shared.gsrun"
    first = StoreWriter(path, RunMeta(model_class="First"))
    try:
        with pytest.raises(StoreError, match="is writing the run store"):
            StoreWriter(path, RunMeta(model_class="Second"))
        first.append_step(0, {"fc": {"grad_norm": 1.0}}, {})
    finally:
        first.close()
    assert RunRecord.load(path).meta.model_class == "First"
    StoreWriter(path, RunMeta(model_class="Third")).close()  # a finished store can be replaced
    assert RunRecord.load(path).steps == []


@pytest.mark.parametrize("damage", ["truncated", "scribbled", "empty", "rows"])
def test_a_damaged_store_is_a_record_format_error(tmp_path, damage):
    path = odd_record(True).save(tmp_path / "d.gsrun")
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "scribbled":
        path.write_bytes(data[:100] + os.urandom(len(data) - 200) + data[-100:])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        with sqlite3.connect(path) as db:
            db.execute("UPDATE steps SET value_blob = x'00' WHERE seq = 3")
        db.close()
    with pytest.raises(RecordFormatError) as error:
        RunRecord.load(path)
    assert str(path) in str(error.value)
    assert any(word in str(error.value) for word in ("damaged", "not valid JSON", "not a gradscope"))
