"""TensorBoard and wandb export, read back with each tool's own reader (no network, no mocks)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import gradscope
from gradscope import export
from gradscope.summary import summary_scalars

from ..models import classification_batches, mlp, train_steps


@pytest.fixture(scope="module")
def record():
    torch.manual_seed(0)
    model = mlp((8, 16, 16, 3), activation=nn.Sigmoid)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradscope.watch(model, optimizer=opt) as run:
        train_steps(model, opt, classification_batches(4), run=run)
    return run.record


def test_summary_scalars_match_the_per_layer_series(record):
    summary = summary_scalars(record, 2)
    grad_norms = [record.series("grad_norm", p)[2] for p in record.param_stats]
    assert summary["gradscope/grad_norm_total"] == pytest.approx(math.sqrt(sum(v * v for v in grad_norms)))
    first, last = record.series("backprop_norm", "0")[2], record.series("backprop_norm", "4")[2]
    assert summary["gradscope/backprop_first_last_ratio"] == pytest.approx(first / last)
    assert "gradscope/dead_frac_max" in summary  # the Sigmoids are non-negative: dead units are tracked


def test_tensorboard_export_reads_back_with_tensorboards_event_reader(record, tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra: pip install -e .[test]")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = export.to_tensorboard(record, tmp_path / "tb")
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert "grad_rms/0" in scalars and "backprop_norm/4" in scalars and "logged/loss" in scalars
    assert not any(tag.count("/") > 1 and not tag.startswith("gradscope/") for tag in scalars)
    series = events.Scalars("grad_rms/2")
    assert [e.step for e in series] == record.steps
    assert [e.value for e in series] == pytest.approx(record.series("grad_rms", "2"), rel=1e-6)
    assert [e.value for e in events.Scalars("logged/loss")] == pytest.approx(record.scalar_series("loss")[1])
    assert "gradscope/grad_norm_total" in scalars
    tensors = events.Tags()["tensors"]
    assert "gradscope/findings/text_summary" in tensors
    findings = events.Tensors("gradscope/findings/text_summary")[-1].tensor_proto.string_val[0].decode()
    codes = gradscope.diagnose(record).codes()
    assert codes and all(f"(`{code}`)" in findings for code in codes)
    assert "custom_scalars__config__" in tensors
    layout = events.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0]
    assert b"^grad_rms/" in layout
    report = (folder / export.REPORT_FILE).read_text(encoding="utf-8")
    assert report.startswith("<!DOCTYPE html>")


def test_wandb_export_offline_logs_one_call_per_step(record, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="the wandb extra: pip install -e .[test]")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(project="gradscope-test", dir=str(tmp_path), mode="offline")
    try:
        export.to_wandb(record, run)
        assert run.summary["grad_rms/2"] == pytest.approx(record.series("grad_rms", "2")[-1], rel=1e-6)
        assert run.summary["logged/loss"] == pytest.approx(record.scalar_series("loss")[1][-1])
        assert run.step == record.steps[-1] + 1
    finally:
        run.finish()
    offline = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert offline and offline[0].stat().st_size > 0


def test_exporters_name_the_extra_when_the_framework_is_missing(record, monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)  # what an uninstalled package looks like to import
    with pytest.raises(gradscope.GradscopeError, match=r'pip install "torch-gradscope\[wandb\]"'):
        export.to_wandb(record)


def test_cli_export_writes_tensorboard_events(record, tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra: pip install -e .[test]")
    from click.testing import CliRunner
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from gradscope_cli.main import main

    run_file = record.save(tmp_path / "run.json")
    runner = CliRunner()
    args = ["export", str(run_file), "--tensorboard", str(tmp_path / "tb")]
    result = runner.invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("backprop_norm/0")] == record.steps
    assert (tmp_path / "tb" / export.REPORT_FILE).is_file()

    nowhere = runner.invoke(main, ["export", str(run_file)])
    assert nowhere.exit_code == 2 and "--tensorboard DIR" in nowhere.stderr
    (tmp_path / "a_file").write_text("x")
    on_a_file = runner.invoke(main, ["export", str(run_file), "--tensorboard", str(tmp_path / "a_file")])
    assert on_a_file.exit_code == 2 and "Traceback" not in on_a_file.stderr
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    corrupt = runner.invoke(main, ["export", str(broken), "--tensorboard", str(tmp_path / "tb2")])
    assert corrupt.exit_code == 2 and "not valid JSON" in corrupt.stderr
    assert not (tmp_path / "tb2").exists()
