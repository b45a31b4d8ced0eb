"""Every bad input: one clear paragraph on stderr, exit status 2, no traceback, no output files."""

from __future__ import annotations

import json
import os
import sys

import pytest

from .conftest import TINY_MODEL, assert_user_error, files_under

FAST = ["--steps", "2", "--batch-size", "4"]


def _outputs(tmp_path):
    """Ask for every kind of output, in places that do not exist yet."""
    return ["--json", tmp_path / "out" / "run.json", "--html", tmp_path / "out" / "r.html", "--png", tmp_path / "figs"]


def _analyze_fails(gradscope_cli, tmp_path, path, *phrases, extra=()):
    before = files_under(tmp_path)
    outcome = gradscope_cli("analyze", path, *FAST, *_outputs(tmp_path), *extra)
    assert_user_error(outcome, *phrases)
    assert files_under(tmp_path) == before, "a failed run must not create any output file or folder"
    return outcome


def test_file_does_not_exist(gradscope_cli, tmp_path):
    _analyze_fails(gradscope_cli, tmp_path, tmp_path / "missing.py", "missing.py", "does not exist")


def test_not_a_python_file(gradscope_cli, tmp_path):
    path = tmp_path / "model.txt"
    path.write_text(TINY_MODEL)
    _analyze_fails(gradscope_cli, tmp_path, path, "model.txt", "not a Python file", "build_model()")


def test_a_directory_is_not_a_model_file(gradscope_cli, tmp_path):
    _analyze_fails(gradscope_cli, tmp_path, tmp_path, "is a directory")


def test_syntax_error_names_the_line(gradscope_cli, tmp_path, model_file):
    path = model_file(
        """
        from torch import nn

        def build_model(:
            return nn.Linear(3, 3)
        """
    )
    # dedent keeps the leading blank line, so the broken `def` is line 4
    _analyze_fails(gradscope_cli, tmp_path, path, "syntax error", "line 4", "def build_model(:")


def test_import_error_names_the_missing_module(gradscope_cli, tmp_path, model_file):
    path = model_file(
        """
        import torch
        import gradscope_no_such_module_xyz

        def build_model():
            return torch.nn.Linear(3, 3)
        """
    )
    _analyze_fails(gradscope_cli, tmp_path, path, "'gradscope_no_such_module_xyz'", "not installed", "model.py:3")


def test_error_at_top_level_names_the_line(gradscope_cli, tmp_path, model_file):
    path = model_file(
        """
        WIDTH = int("wide")
        """
    )
    _analyze_fails(gradscope_cli, tmp_path, path, "Executing model.py raised ValueError", "model.py:2")


def test_no_model_says_what_the_contract_expects(gradscope_cli, tmp_path, model_file):
    path = model_file(
        """
        from torch import nn

        net = nn.Linear(3, 3)  # the wrong name
        """
    )
    _analyze_fails(gradscope_cli, tmp_path, path, "defines no model", "build_model()", "`model`", "make_batch")


def test_model_that_is_a_class_not_an_instance(gradscope_cli, tmp_path, model_file):
    path = model_file(
        """
        from torch import nn

        class Net(nn.Module):
            pass

        model = Net
        """
    )
    _analyze_fails(gradscope_cli, tmp_path, path, "the class Net", "model = Net()")


def test_build_model_raising(gradscope_cli, tmp_path, model_file):
    path = model_file(
        """
        def build_model():
            raise ValueError("hidden size must be even")
        """
    )
    _analyze_fails(
        gradscope_cli, tmp_path, path, "build_model() raised ValueError: hidden size must be even", "model.py:3"
    )


def test_build_model_returning_something_else(gradscope_cli, tmp_path, model_file):
    path = model_file(
        """
        def build_model():
            return "a model"
        """
    )
    _analyze_fails(gradscope_cli, tmp_path, path, "returned a str", "not a torch.nn.Module")


FORWARD_RAISES = """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(10, 3)

        def forward(self, x):
            h = self.fc(x)
            if h.shape[0] > 0:
                raise RuntimeError("the labels are not aligned")
            return h

    def build_model():
        return Net()
"""


def test_forward_raising_shows_the_message_and_where(gradscope_cli, tmp_path, model_file):
    path = model_file(FORWARD_RAISES)
    _analyze_fails(
        gradscope_cli,
        tmp_path,
        path,
        "forward pass raised RuntimeError: the labels are not aligned",
        "model.py:13 in forward",
        "raise RuntimeError",
        "at step 0",
    )


def test_debug_shows_the_full_traceback_with_the_users_frame(gradscope_cli, tmp_path, model_file):
    path = model_file(FORWARD_RAISES)
    outcome = gradscope_cli("analyze", path, *FAST, "--debug")
    assert outcome.exit_code == 2
    assert "Traceback (most recent call last)" in outcome.stderr
    assert f'File "{path}", line 13, in forward' in outcome.stderr
    assert "RuntimeError: the labels are not aligned" in outcome.stderr
    assert outcome.stderr.rstrip().splitlines()[-1].startswith("Error: The model's forward pass raised")


def test_inputs_of_the_wrong_shape_from_input_shape(gradscope_cli, tmp_path, model_file):
    path = model_file(TINY_MODEL)
    outcome = _analyze_fails(
        gradscope_cli, tmp_path, path, "mat1 and mat2", "(4, 7)", "--input-shape", extra=["--input-shape", "7"]
    )
    # the failing layer is located even though no frame of the user's file is in the traceback
    assert "in module '0' (Linear(in_features=10" in outcome.stderr


def test_inputs_of_the_wrong_shape_from_make_batch(gradscope_cli, tmp_path, model_file):
    path = model_file(
        TINY_MODEL
        + """
    import torch

    def make_batch(batch_size):
        return torch.randn(batch_size, 12), torch.randint(0, 3, (batch_size,))
    """
    )
    _analyze_fails(gradscope_cli, tmp_path, path, "mat1 and mat2", "(4, 12)", "make_batch()")


def test_loss_that_is_not_a_scalar(gradscope_cli, tmp_path, model_file):
    path = model_file(
        TINY_MODEL
        + """
    import torch.nn.functional as F

    def loss_fn(outputs, targets):
        return F.cross_entropy(outputs, targets, reduction="none")
    """
    )
    _analyze_fails(gradscope_cli, tmp_path, path, "loss_fn in model.py", "shape (4,)", "must be a scalar", ".mean()")


def test_loss_fn_returning_a_float(gradscope_cli, tmp_path, model_file):
    path = model_file(
        TINY_MODEL
        + """
    import torch.nn.functional as F

    def loss_fn(outputs, targets):
        return F.cross_entropy(outputs, targets).item()
    """
    )
    _analyze_fails(gradscope_cli, tmp_path, path, "returned a float", "not a tensor", "loss.item()")


def test_nan_loss_at_the_first_step_is_a_finding_not_an_error(gradscope_cli, tmp_path, model_file):
    path = model_file(
        TINY_MODEL
        + """
    import torch.nn.functional as F

    def loss_fn(outputs, targets):
        return F.cross_entropy(outputs, targets) * float("nan")
    """
    )
    run_json = tmp_path / "run.json"
    outcome = gradscope_cli("analyze", path, *FAST, "--json", run_json, "--fail-on", "never")
    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.stderr.startswith("Wrote ")  # no error, no warning about the NaN on stderr
    assert "nonfinite" in outcome.stdout
    saved = json.loads(run_json.read_text())
    assert saved["scalars"]["loss"][0] == [0, "nan"]
    nonfinite = [f for f in saved["findings"] if f["code"] == "nonfinite"]
    assert nonfinite and nonfinite[0]["severity"] == "error"
    # and with the default --fail-on error, the finding makes the exit status 1 (not 2)
    assert gradscope_cli("analyze", path, *FAST).exit_code == 1


def test_malformed_yaml_config(gradscope_cli, tmp_path, model_file):
    path = model_file(TINY_MODEL)
    config = tmp_path / "thresholds.yaml"
    config.write_text("vanishing_gradients:\n  warn_ratio: [0.1\n")
    _analyze_fails(gradscope_cli, tmp_path, path, "thresholds.yaml", "YAML", extra=["--config", config])


def test_unknown_config_key_is_named(gradscope_cli, tmp_path, model_file):
    path = model_file(TINY_MODEL)
    config = tmp_path / "thresholds.yaml"
    config.write_text("vanishing_gradients:\n  warn_ratioo: 0.1\n")
    _analyze_fails(gradscope_cli, tmp_path, path, "warn_ratioo", "warn_ratio", extra=["--config", config])


def test_config_file_that_does_not_exist(gradscope_cli, tmp_path, model_file):
    path = model_file(TINY_MODEL)
    _analyze_fails(gradscope_cli, tmp_path, path, "nope.yaml", extra=["--config", tmp_path / "nope.yaml"])


def test_output_folder_that_is_a_file(gradscope_cli, tmp_path, model_file):
    path = model_file(TINY_MODEL)
    (tmp_path / "notes.txt").write_text("a file where a folder should be")
    before = files_under(tmp_path)
    outcome = gradscope_cli("analyze", path, *FAST, "--json", tmp_path / "notes.txt" / "run.json")
    assert_user_error(outcome, "--json", "is a file, not a folder")
    assert files_under(tmp_path) == before


def test_png_option_pointing_at_a_file(gradscope_cli, tmp_path, model_file):
    path = model_file(TINY_MODEL)
    (tmp_path / "figs").write_text("")
    assert_user_error(gradscope_cli("analyze", path, *FAST, "--png", tmp_path / "figs"), "--png", "takes a folder")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc, where nobody can create files")
def test_output_folder_that_cannot_be_written(gradscope_cli, tmp_path, model_file):
    path = model_file(TINY_MODEL)
    outcome = gradscope_cli("analyze", path, *FAST, "--html", "/proc/report.html")
    assert_user_error(outcome, "--html", "'/proc'", "not writable")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write into a read-only folder")
def test_read_only_output_folder(gradscope_cli, tmp_path, model_file):
    path = model_file(TINY_MODEL)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert_user_error(gradscope_cli("analyze", path, *FAST, "--json", locked / "run.json"), "not writable")
    finally:
        locked.chmod(0o700)


def test_bad_option_values_exit_2(gradscope_cli, tmp_path, model_file):
    path = model_file(TINY_MODEL)
    assert gradscope_cli("analyze", path, "--steps", "0").exit_code == 2
    assert_user_error(gradscope_cli("analyze", path, *FAST, "--input-shape", "3xbig"), "--input-shape", "3x32x32")


def test_bad_budgets_name_the_flag_and_write_nothing(gradscope_cli, tmp_path, model_file):
    path = model_file(TINY_MODEL)
    for bad in ("0", "-0.5", "1.5", "nan"):
        _analyze_fails(gradscope_cli, tmp_path, path, "--budget must be a number above 0 and at most 1", extra=("--budget", bad))
    not_a_number = gradscope_cli("analyze", path, *FAST, "--budget", "2%")
    assert not_a_number.exit_code == 2 and "--budget" in not_a_number.stderr and "Traceback" not in not_a_number.stderr


def test_budget_chooses_the_recorded_steps_of_analyze(gradscope_cli, tmp_path, model_file):
    outcome = gradscope_cli("analyze", model_file(TINY_MODEL), "--steps", "30", "--budget", "0.02", "--json", tmp_path / "run.json")
    assert outcome.exit_code == 0, outcome.stderr
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["meta"]["options"]["budget"] == 0.02
    assert record["steps"][0] == 0 and 1 < len(record["steps"]) < 30 and len(record["intervals"]) == len(record["steps"])
    assert "chosen by an overhead budget" in outcome.stdout and "Overhead budget 2 %" in outcome.stdout


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="CUDA is available here")
def test_cuda_requested_without_a_gpu(gradscope_cli, tmp_path, model_file):
    assert_user_error(gradscope_cli("analyze", model_file(TINY_MODEL), *FAST, "--device", "cuda"), "CUDA", "--device cpu")


def test_report_on_a_damaged_run_file(gradscope_cli, tmp_path):
    damaged = tmp_path / "run.json"
    damaged.write_text('{"schema_version": 1, "meta": ')
    assert_user_error(gradscope_cli("report", damaged), "not valid JSON")
    assert_user_error(gradscope_cli("report", tmp_path / "none.json"), "does not exist")
    assert_user_error(gradscope_cli("compare", damaged, damaged), "not valid JSON")
