"""`gradscope sweep`: outputs, list parsing, and user errors (exit 2, one paragraph, no files)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from gradscope.sweep import SweepResult
from gradscope_cli.sweep import sweep_command

FAST = ["--activations", "sigmoid,relu", "--depths", "2,3", "--steps", "2"]


def invoke(*args):
    result = CliRunner().invoke(sweep_command, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def files_under(directory):
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def test_sweep_prints_a_table_and_writes_every_output(tmp_path):
    code, out, err = invoke(*FAST, "--norm", "none,batchnorm", "--json", tmp_path / "s.json",
                            "--html", tmp_path / "s.html", "--png", tmp_path / "figs")
    assert code == 0, err
    assert "first/last" in out and out.count("sigmoid") >= 4
    assert "At initialisation the backprop signal changes per layer" in out
    loaded = SweepResult.load(tmp_path / "s.json")
    assert len(loaded.summaries) == 8 and loaded.options["norms"] == ["none", "batchnorm"]
    assert loaded.find("relu", 3, "batchnorm").layers[:3] == ["fc1", "bn1", "act1"]
    assert "<html" in (tmp_path / "s.html").read_text(encoding="utf-8").lower()
    assert files_under(tmp_path / "figs") == [
        "sweep_backprop_by_layer.png", "sweep_ratio_heatmap.png", "sweep_relu_sparsity.png", "sweep_training_curves.png"]
    assert "Wrote" in err


def test_quiet_prints_nothing(tmp_path):
    code, out, err = invoke(*FAST, "--quiet", "--json", tmp_path / "s.json")
    assert (code, out, err) == (0, "", "")
    assert (tmp_path / "s.json").exists()


def test_options_reach_the_sweep(tmp_path):
    code, _, err = invoke("--activations", " tanh ", "--depths", "2", "--width", "8", "--dropout", "0,0.5",
                          "--init", "kaiming", "--steps", "3", "--lr", "0.05", "--seed", "3", "--json", tmp_path / "s.json")
    assert code == 0, err
    result = SweepResult.load(tmp_path / "s.json")
    assert [c.key for c in result.configs] == [("tanh", 2, "none", 0.0), ("tanh", 2, "none", 0.5)]
    config = result.configs[1]
    assert (config.width, config.init, config.steps, config.lr, config.seed) == (8, "kaiming", 3, 0.05, 3)
    assert result.find("tanh", 2, dropout=0.5).layers == ["fc1", "act1", "drop1", "fc2", "act2", "drop2", "head"]


def test_data_file_is_used(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", X=rng.normal(size=(30, 3)), y=np.arange(30) % 2)
    code, _, err = invoke("--activations", "relu", "--depths", "2", "--steps", "2", "--data", tmp_path / "d.npz",
                          "--json", tmp_path / "s.json")
    assert code == 0, err
    data = json.loads((tmp_path / "s.json").read_text())["data"]
    assert data.startswith("d.npz: 3 features, 2 classes, 24 train / 6 validation")


@pytest.mark.parametrize(
    "args,phrase",
    [
        (["--depths", "2,,4"], "--depths '2,,4' has an empty item"),
        (["--depths", "two"], "--depths: 'two' is not a whole number"),
        (["--dropout", "0,half"], "--dropout: 'half' is not a number"),
        (["--dropout", "1.5"], "0 <= p < 1"),
        (["--activations", "sigmoid,softplus"], "Unknown activation 'softplus'"),
        (["--norm", "layer"], "Unknown norm 'layer'"),
        (["--width", "0"], "width must be a whole number >= 1"),
        (["--lr", "fast"], "--lr: 'fast' is not a number"),
        (["--data", "missing.npz"], "Data file 'missing.npz' does not exist"),
    ],
)
def test_user_errors_exit_2_with_one_paragraph_and_no_files(tmp_path, args, phrase):
    outputs = ["--json", tmp_path / "out" / "s.json", "--html", tmp_path / "out" / "s.html", "--png", tmp_path / "figs"]
    code, out, err = invoke("--steps", "1", *args, *outputs)
    assert code == 2
    assert err.startswith("Error: ") and phrase in err and "\n" not in err.strip() and "Traceback" not in err
    assert out == ""
    assert files_under(tmp_path) == []


def test_bad_data_file_arrays_exit_2(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.zeros((4, 2)))
    code, _, err = invoke("--data", tmp_path / "d.npz")
    assert code == 2 and "has no array named y" in err


def test_unwritable_output_fails_before_training(tmp_path):
    (tmp_path / "afile").write_text("x")
    code, out, err = invoke(*FAST, "--png", tmp_path / "afile")
    assert code == 2 and "--png" in err and out == ""


def test_init_choice_is_checked_by_click():
    code, _, err = invoke("--init", "orthogonal")
    assert code == 2 and "'orthogonal' is not one of" in err
