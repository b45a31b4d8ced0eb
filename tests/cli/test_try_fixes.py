"""`gradscope analyze --try-fixes` / `--fixes-json`: the table, the files, compare, the HTML section."""

from __future__ import annotations

import json

from tests.cli.conftest import SAMPLES, TINY_MODEL

SIGMOID = """
    from torch import nn

    def build_model():
        layers = []
        for _ in range(8):
            layers += [nn.Linear(16, 16), nn.Sigmoid()]
        return nn.Sequential(*layers, nn.Linear(16, 4))
"""


def test_try_fixes_table_json_records_and_compare(gradscope_cli, model_file, tmp_path):
    path = model_file(SIGMOID)
    fixes_json = tmp_path / "out" / "fixes.json"
    html = tmp_path / "report.html"
    outcome = gradscope_cli(
        "analyze", path, "--steps", "6", "--batch-size", "16", "--try-fixes", "--fixes-json", fixes_json,
        "--html", html, "--fail-on", "never",
    )
    assert outcome.exit_code == 0, outcome.stderr
    assert "Verified fixes" in outcome.stdout
    assert "vanishing-gradients" in outcome.stdout and "relu-kaiming" in outcome.stdout
    assert "fix(es) on fresh copies" in outcome.stderr  # progress goes to stderr
    document = json.loads(fixes_json.read_text())
    trials = {t["fix"]: t for t in document["trials"]}
    assert {"relu-kaiming", "batchnorm", "residual"} <= set(trials)
    for trial in trials.values():
        assert trial["verdict"] in ("fixed", "improved", "no effect", "worse", "not tried", "failed")
        shown = "\n".join("      " + line if line else "" for line in trial["code"].splitlines())
        assert shown in outcome.stdout or trial["verdict"] == "not tried"  # the report shows the applied code
    record = fixes_json.parent / trials["batchnorm"]["record"]
    base = fixes_json.parent / document["base"]
    assert record.exists() and base.exists()
    compared = gradscope_cli("compare", base, record)
    assert compared.exit_code == 0 and "BatchNorm1d" in compared.stdout
    page = html.read_text()
    assert 'id="verified-fixes"' in page
    assert page.count("<img") >= 1 + sum(1 for t in trials.values() if t.get("record"))


def test_healthy_model_with_try_fixes_has_no_trials_and_exits_0(gradscope_cli, model_file):
    outcome = gradscope_cli("analyze", model_file(TINY_MODEL), "--steps", "3", "--try-fixes")
    assert outcome.exit_code == 0, outcome.stderr
    assert "Verified fixes: no finding at warning or error level has a fix to try." in outcome.stdout


def test_fixes_json_in_an_unwritable_place_fails_before_training(gradscope_cli, model_file, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    outcome = gradscope_cli("analyze", model_file(TINY_MODEL), "--fixes-json", blocker / "fixes.json")
    assert outcome.exit_code == 2 and "Error: " in outcome.stderr and "--fixes-json" in outcome.stderr
    assert not list(tmp_path.glob("*.json"))


def test_sample_try_fixes_runs(gradscope_cli, tmp_path):
    outcome = gradscope_cli(
        "analyze", SAMPLES / "saturated_tanh.py", "--steps", "5", "--try-fixes", "--quiet", "--fixes-json",
        tmp_path / "f.json",
    )
    assert outcome.exit_code == 0 and outcome.stdout == "" and outcome.stderr == ""  # saturation is a warning
    trials = {t["fix"]: t for t in json.loads((tmp_path / "f.json").read_text())["trials"]}
    assert trials["xavier-init"]["finding"] == "saturation"
    assert 'calculate_gain("tanh")' in trials["xavier-init"]["code"]
    assert trials["xavier-init"]["after"]["saturated_fraction"] < trials["xavier-init"]["before"]["saturated_fraction"]
