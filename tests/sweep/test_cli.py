"""`gradscope sweep`: outputs, list parsing, and user errors (exit 2, one paragraph, no files)."""

from __future__ import annotations

import json

import click
import numpy as np
import pytest
from click.testing import CliRunner

from gradscope.sweep import SweepResult
from gradscope_cli.sweep import DEPTH_LIST, DROPOUT_LIST, INIT_LIST, sweep_command

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
    assert "first/last" in out and out.count("sigmoid") >= 8
    assert "At initialisation the backprop signal changes per layer" in out
    loaded = SweepResult.load(tmp_path / "s.json")
    # every network at both inits by default, side by side
    assert len(loaded.summaries) == 16 and loaded.options["norms"] == ["none", "batchnorm"]
    assert loaded.options["inits"] == ["default", "recommended"]
    assert [c.init for c in loaded.configs[:2]] == ["default", "recommended"]
    assert loaded.find("relu", 3, "batchnorm", init="recommended").layers[:3] == ["fc1", "bn1", "act1"]
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
                          "--init", "kaiming", "--steps", "3", "--lr", "0.05", "--seed", "3",
                          "--json", tmp_path / "s.json")
    assert code == 0, err
    result = SweepResult.load(tmp_path / "s.json")
    assert [c.key for c in result.configs] == [("tanh", 2, "none", 0.0, "kaiming"), ("tanh", 2, "none", 0.5, "kaiming")]
    config = result.configs[1]
    assert (config.width, config.init, config.steps, config.lr, config.seed) == (8, "kaiming", 3, 0.05, 3)
    assert result.find("tanh", 2, dropout=0.5).layers == ["fc1", "act1", "drop1", "fc2", "act2", "drop2", "head"]


def test_data_file_is_used(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", X=rng.normal(size=(30, 3)), y=np.arange(30) % 2)
    code, _, err = invoke("--activations", "relu", "--depths", "2", "--init", "default", "--steps", "2",
                          "--data", tmp_path / "d.npz", "--json", tmp_path / "s.json")
    assert code == 0, err
    data = json.loads((tmp_path / "s.json").read_text())["data"]
    assert data.startswith("d.npz: 3 features, 2 classes, 24 train / 6 validation")


@pytest.mark.parametrize(
    "args,phrase",
    [
        (["--depths", "2,,4"], "Invalid value for '--depths': '2,,4' has an empty item"),
        (["--depths", "two"], "Invalid value for '--depths': 'two' is not a whole number"),
        (["--depths", "2,0"], "Invalid value for '--depths': 0 is not in the range x>=1"),
        (["--dropout", "0,half"], "Invalid value for '--dropout': 'half' is not a number"),
        (["--dropout", "1.5"], "Invalid value for '--dropout': 1.5 is not in the range 0.0<=x<1.0"),
        (["--activations", "relu,softplus"], "Invalid value for '--activations': 'softplus' is not one of 'sigmoid'"),
        (["--norm", "layer"], "Invalid value for '--norm': 'layer' is not one of 'none', 'batchnorm'"),
        (["--init", "default,orthogonal"], "Invalid value for '--init': 'orthogonal' is not one of 'default'"),
        (["--width", "0"], "Invalid value for '--width': 0 is not in the range x>=1"),
        (["--lr", "fast"], "Invalid value for '--lr': 'fast' is not a valid float range"),
    ],
)
def test_bad_options_exit_2_naming_the_flag_before_anything_runs(tmp_path, args, phrase):
    err = failed_sweep_error(tmp_path, args)
    error_line = err.strip().splitlines()[-1]  # after click's usage lines
    assert error_line.startswith("Error: ") and phrase in error_line


@pytest.mark.parametrize(
    "args,phrase",
    [
        (["--lr", "inf"], "lr must be a positive number"),
        (["--data", "missing.npz"], "Data file 'missing.npz' does not exist"),
    ],
)
def test_user_errors_exit_2_with_one_paragraph_and_no_files(tmp_path, args, phrase):
    err = failed_sweep_error(tmp_path, args)
    assert err.startswith("Error: ") and phrase in err and "\n" not in err.strip()


def failed_sweep_error(tmp_path, args):
    """Run a sweep that must fail with exit 2, printing and writing nothing; its stderr."""
    outputs = ["--json", tmp_path / "out" / "s.json", "--html", tmp_path / "out" / "s.html", "--png", tmp_path / "figs"]
    code, out, err = invoke("--steps", "1", *args, *outputs)
    assert code == 2 and out == "" and "Traceback" not in err
    assert files_under(tmp_path) == []
    return err


def test_debug_adds_the_traceback_to_a_user_error(tmp_path):
    code, _, err = invoke("--data", tmp_path / "missing.npz", "--debug")
    assert code == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("Error: Data file")


def test_bad_data_file_arrays_exit_2(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.zeros((4, 2)))
    code, _, err = invoke("--data", tmp_path / "d.npz")
    assert code == 2 and "has no array named y" in err


def test_unwritable_output_fails_before_training(tmp_path):
    (tmp_path / "afile").write_text("x")
    code, out, err = invoke(*FAST, "--png", tmp_path / "afile")
    assert code == 2 and "--png" in err and out == ""


def test_lists_are_parsed_once_by_their_param_type():
    assert DEPTH_LIST.convert(" 2, 4 ,8", None, None) == [2, 4, 8]
    assert DROPOUT_LIST.convert("0,0.5", None, None) == [0.0, 0.5]
    assert INIT_LIST.convert("recommended", None, None) == ["recommended"]
    assert DEPTH_LIST.convert([2, 4], None, None) == [2, 4]  # a value already converted passes through
    with pytest.raises(click.BadParameter, match="'x' is not a whole number"):
        DEPTH_LIST.convert("2,x", None, None)
