"""Each sample's top comment promises what gradscope finds; run `gradscope analyze` and check it."""

from __future__ import annotations

import ast
import json
import re

import pytest

from .conftest import SAMPLES

MODEL_SAMPLES = sorted(p for p in SAMPLES.glob("*.py") if p.name != "watch_training.py")
PROMISE = re.compile(r"gradscope should find: (nothing at warning or error level|[a-z-]+(?:, [a-z-]+)*)[ .]")


def promised(path) -> str:
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    match = PROMISE.search(" ".join(docstring.split()))
    assert match, f"{path.name} must say 'gradscope should find: <codes>.' in its top comment"
    return match.group(1)


def test_there_are_at_least_five_model_samples():
    assert len(MODEL_SAMPLES) >= 5


@pytest.mark.parametrize("sample", MODEL_SAMPLES, ids=lambda p: p.stem)
def test_sample_finds_what_its_comment_promises(sample, gradscope_cli, tmp_path):
    run_json = tmp_path / "run.json"
    outcome = gradscope_cli("analyze", sample, "--steps", "20", "--batch-size", "16", "--json", run_json)
    data = json.loads(run_json.read_text())
    findings = [f for network in data.get("networks", {"": data}).values() for f in network["findings"]]  # gan.py: 2
    serious = {f["code"] for f in findings if f["severity"] in ("warning", "error")}
    promise = promised(sample)
    if promise.startswith("nothing"):
        assert serious == set(), outcome.stdout
        assert outcome.exit_code == 0
        return
    codes = set(promise.split(", "))
    assert codes <= {f["code"] for f in findings}, outcome.stdout
    for code in codes:
        assert f"[{code}]" in outcome.stdout  # the terminal report shows it too
    has_error = any(f["severity"] == "error" for f in findings)
    assert outcome.exit_code == (1 if has_error else 0)  # default --fail-on error


def _finding(run_json, code):
    return next(f for f in json.loads(run_json.read_text())["findings"] if f["code"] == code)


def test_dead_relu_sample_names_the_dead_layers(gradscope_cli, tmp_path):
    run_json = tmp_path / "run.json"
    gradscope_cli("analyze", SAMPLES / "cnn_dead_relu.py", "--steps", "5", "--batch-size", "8", "--json", run_json)
    dead = _finding(run_json, "dead-relu")
    assert "features.3" in dead["layers"]  # the ReLU after the conv whose bias was pushed to -10
    assert "features.1" not in dead["layers"]  # the first ReLU is healthy


def test_overfitting_sample_recommends_dropout(gradscope_cli, tmp_path):
    run_json = tmp_path / "run.json"
    gradscope_cli("analyze", SAMPLES / "overfitting_mlp.py", "--steps", "20", "--json", run_json)
    overfitting = _finding(run_json, "overfitting")
    assert "dropout" in overfitting["recommendation"].lower()
    scalars = json.loads(run_json.read_text())["scalars"]
    assert len(scalars["loss"]) == 20 and len(scalars["val_loss"]) == 10  # about ten validations, evenly spaced
