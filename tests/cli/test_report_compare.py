"""`gradscope report` renders a saved run without the model; `compare` shows two runs side by side."""

from __future__ import annotations

import json

import pytest

from gradscope import RunRecord

from .conftest import SAMPLES, TINY_MODEL, assert_user_error, files_under

FAST = ["--steps", "6", "--batch-size", "8"]


@pytest.fixture(scope="module")
def before_after(tmp_path_factory):
    """Runs of the vanishing sample and of its fix, saved with --json."""
    from click.testing import CliRunner

    from gradscope_cli.main import main

    folder = tmp_path_factory.mktemp("runs")
    runner = CliRunner()
    for stem, sample in (("sigmoid", "deep_sigmoid_mlp.py"), ("relu_bn", "relu_bn_kaiming_mlp.py")):
        args = ["analyze", str(SAMPLES / sample), *FAST, "--json", str(folder / f"{stem}.json"), "--quiet"]
        runner.invoke(main, args, catch_exceptions=False)
    return folder / "sigmoid.json", folder / "relu_bn.json"


def test_report_renders_a_saved_run_without_the_model(gradscope_cli, before_after, tmp_path):
    sigmoid, _ = before_after
    copy = tmp_path / "moved.json"  # the model file is nowhere near: nothing may re-run it
    copy.write_bytes(sigmoid.read_bytes())
    outcome = gradscope_cli("report", copy, "--json", tmp_path / "again.json", "--html", tmp_path / "r.html")
    assert outcome.exit_code == 0  # report's --fail-on defaults to never
    assert "[vanishing-gradients]" in outcome.stdout
    assert "Per-layer" in outcome.stdout
    again = RunRecord.load(tmp_path / "again.json")
    assert again.to_dict() == RunRecord.load(copy).to_dict()
    assert (tmp_path / "r.html").read_text().lstrip().lower().startswith("<!doctype html")
    assert gradscope_cli("report", copy, "--fail-on", "error", "--quiet").exit_code == 1


def test_report_with_a_config_changes_the_findings(gradscope_cli, before_after, tmp_path):
    sigmoid, _ = before_after
    config = tmp_path / "off.yaml"
    config.write_text("vanishing_gradients:\n  enabled: false\n")
    outcome = gradscope_cli("report", sigmoid, "--config", config)
    assert outcome.exit_code == 0
    assert "[vanishing-gradients]" not in outcome.stdout


def test_analyze_output_files_are_complete_and_loadable(gradscope_cli, model_file, tmp_path):
    path = model_file(TINY_MODEL)
    outcome = gradscope_cli(
        "analyze", path, *FAST, "--json", tmp_path / "o" / "run.json", "--html", tmp_path / "o" / "r.html",
        "--png", tmp_path / "figs",
    )
    assert outcome.exit_code == 0, outcome.stderr
    record = RunRecord.load(tmp_path / "o" / "run.json")
    assert record.steps == list(range(6))
    assert record.meta.options["model_file"] == str(path)
    pngs = sorted((tmp_path / "figs").glob("*.png"))
    assert pngs and all(p.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    assert not [p for p in files_under(tmp_path) if p.endswith(".tmp")]  # no temporary files left
    for line in outcome.stderr.splitlines():
        assert line.startswith("Wrote ")


def test_quiet_prints_nothing(gradscope_cli, model_file, tmp_path):
    outcome = gradscope_cli("analyze", model_file(TINY_MODEL), *FAST, "--json", tmp_path / "r.json", "--quiet")
    assert (outcome.exit_code, outcome.stdout, outcome.stderr) == (0, "", "")
    assert (tmp_path / "r.json").exists()


def test_fail_on_levels(gradscope_cli, before_after):
    sigmoid, _ = before_after  # vanishing-gradients is an error
    codes = {level: gradscope_cli("report", sigmoid, "--fail-on", level, "--quiet").exit_code
             for level in ("info", "warning", "error", "never")}
    assert codes == {"info": 1, "warning": 1, "error": 1, "never": 0}


def test_a_rule_that_could_not_run_does_not_fail_the_run(gradscope_cli, before_after):
    _, relu_bn = before_after  # healthy; only the note that overfitting was not checked (no val_loss)
    outcome = gradscope_cli("report", relu_bn, "--fail-on", "info")
    assert "overfitting were not checked" in " ".join(outcome.stdout.split())
    assert outcome.exit_code == 0


def test_compare_before_and_after_batchnorm(gradscope_cli, before_after):
    sigmoid, relu_bn = before_after
    outcome = gradscope_cli("compare", sigmoid, relu_bn)
    assert outcome.exit_code == 0, outcome.stderr
    text = outcome.stdout
    fixed = text.split("Fixed")[1].split("Introduced")[0]
    assert "vanishing-gradients" in fixed
    assert "Introduced (found in relu_bn, not in sigmoid): none" in text
    # aligned by layer type: the first Linear faces the first Linear, BatchNorm rows have no partner
    rows = [line for line in text.splitlines() if "Linear" in line or "BatchNorm1d" in line or "Sigmoid" in line]
    assert rows[0].split()[:4] == ["0", "Linear", "0", "Linear"]
    assert any(line.split()[:3] == ["-", "1", "BatchNorm1d"] for line in rows)
    assert not any("Sigmoid" in line and "BatchNorm1d" in line for line in rows)
    assert any(line.split()[:4] == ["1", "Sigmoid", "2", "ReLU"] for line in rows)  # activations face each other
    ratio_line = next(line for line in text.splitlines() if line.startswith("Backprop signal at the first layer"))
    before, after = (float(part.split()[0]) for part in ratio_line.split(": ")[1].split(" -> "))
    assert before < 1e-5 < 0.1 < after  # the chain-rule decay is gone


def test_compare_fail_on_introduced_findings(gradscope_cli, before_after):
    sigmoid, relu_bn = before_after
    assert gradscope_cli("compare", relu_bn, sigmoid, "--fail-on", "error").exit_code == 1  # the fix undone
    assert gradscope_cli("compare", sigmoid, relu_bn, "--fail-on", "error").exit_code == 0


def test_compare_same_file_twice_shows_no_change(gradscope_cli, before_after):
    sigmoid, _ = before_after
    outcome = gradscope_cli("compare", sigmoid, sigmoid)
    assert "Fixed (found in A, not in B): none" in outcome.stdout
    assert "Still present:" in outcome.stdout and "vanishing-gradients" in outcome.stdout


def test_report_refuses_a_model_file(gradscope_cli):
    assert_user_error(gradscope_cli("report", SAMPLES / "deep_sigmoid_mlp.py"), "not valid JSON")


def test_saved_findings_are_plain_json(before_after):
    data = json.loads(before_after[0].read_text())
    vanishing = next(f for f in data["findings"] if f["code"] == "vanishing-gradients")
    assert vanishing["severity"] == "error" and "0" in vanishing["layers"]


def test_prints_in_the_model_file_go_to_stderr(gradscope_cli, model_file):
    path = model_file(
        TINY_MODEL
        + """
    print("loading my model")
    """
    )
    outcome = gradscope_cli("analyze", path, *FAST)
    assert outcome.exit_code == 0
    assert outcome.stdout.startswith("gradscope report:")  # stdout is exactly the report
    assert "loading my model" in outcome.stderr


def test_report_and_compare_read_run_stores_and_analyze_writes_one(gradscope_cli, model_file, before_after, tmp_path):
    path = model_file(TINY_MODEL)
    store = tmp_path / "run.gsrun"
    outcome = gradscope_cli("analyze", path, *FAST, "--store", store, "--json", tmp_path / "run.json")
    assert outcome.exit_code == 0, outcome.stderr
    assert RunRecord.load(store).to_json() == RunRecord.load(tmp_path / "run.json").to_json()
    renamed = tmp_path / "run.data"  # told apart by content, not by name
    renamed.write_bytes(store.read_bytes())
    report = gradscope_cli("report", renamed)
    assert report.exit_code == 0 and "Per-layer" in report.stdout
    compare = gradscope_cli("compare", before_after[0], renamed)
    assert compare.exit_code == 0 and "Comparing" in compare.stdout


def test_analyze_refuses_a_store_path_before_training(gradscope_cli, model_file, tmp_path):
    path = model_file(TINY_MODEL)
    notes = tmp_path / "notes.gsrun"
    notes.write_text("mine")
    outcome = gradscope_cli("analyze", path, *FAST, "--store", notes)
    assert outcome.exit_code == 2 and "not a gradscope run store" in outcome.stderr
    assert notes.read_text() == "mine"
    outcome = gradscope_cli("analyze", path, *FAST, "--store", tmp_path / "missing" / "run.gsrun")
    assert outcome.exit_code == 2 and "does not exist" in outcome.stderr
    assert "Training" not in outcome.stderr
