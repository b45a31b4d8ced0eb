"""Fix trials on real models: each fix applied to a fresh copy, trained the same way, measured and judged."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from statistics import mean

import pytest
import torch
from torch import nn

import gradscope
from gradscope.analyze import AnalyzeConfig, analyze_file
from gradscope.diagnose import load_config
from gradscope.fixes import FixTrial, run_fix_trials, try_fixes

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def trials_for(path, only=None, **options) -> tuple[gradscope.RunRecord, list[FixTrial]]:
    config = AnalyzeConfig(**{"steps": 20, "batch_size": 16, **options})
    base = analyze_file(path, config)
    diagnosis = gradscope.diagnose(base)
    return base, run_fix_trials(path, config, base, diagnosis, load_config(), only=only, workers=1)


def by_fix(trials: list[FixTrial]) -> dict[str, FixTrial]:
    return {t.fix: t for t in trials}


@pytest.fixture(scope="module")
def sigmoid_trials():
    return trials_for(SAMPLES / "deep_sigmoid_mlp.py", only=("relu-kaiming", "batchnorm"))


def test_deep_sigmoid_relu_and_batchnorm_trials_fix_the_vanishing_gradient(sigmoid_trials):
    _, trials = sigmoid_trials
    found = by_fix(trials)
    assert set(found) == {"relu-kaiming", "batchnorm"}
    for trial in found.values():
        assert trial.finding == "vanishing-gradients"
        assert trial.verdict == "fixed", (trial.fix, trial.reason, trial.before, trial.after)
        assert trial.before["finding"] == "error" and trial.after["finding"] is None
        before, after = trial.before["first_last_ratio"], trial.after["first_last_ratio"]
        assert after / before > 100, (trial.fix, before, after)  # orders of magnitude, not a nudge
        assert math.isfinite(trial.after["final_loss"])


def test_trial_record_is_the_changed_model_trained_the_same_number_of_steps(sigmoid_trials):
    base, trials = sigmoid_trials
    record = by_fix(trials)["batchnorm"].record
    assert record is not None and record.steps == base.steps
    assert sum(m.type == "BatchNorm1d" for m in record.modules) == 10
    assert not any(m.type == "BatchNorm1d" for m in base.modules)
    relu = by_fix(trials)["relu-kaiming"].record
    assert {m.activation for m in relu.modules if m.activation} == {"relu"}


def test_the_snippet_shown_is_the_code_that_was_applied(sigmoid_trials):
    """Executing the report's snippet on a fresh model gives exactly the model the trial trained."""
    _, trials = sigmoid_trials
    for trial in trials:
        namespace = {"model": load_sample_model("deep_sigmoid_mlp.py")}
        exec(trial.code, namespace)  # the whole snippet: imports, then the model edit
        model = namespace["model"]
        leaves = [(name, type(m).__name__) for name, m in model.named_modules() if not list(m.children())]
        recorded = [(m.name, m.type) for m in trial.record.modules if m.is_leaf and m.name]
        assert leaves == recorded, trial.fix
        assert trial.code.startswith("import torch\nimport torch.nn as nn\n")


def load_sample_model(name: str) -> nn.Module:
    from gradscope.analyze.modelfile import load_model_file

    return load_model_file(SAMPLES / name).instantiate()


def test_same_seed_gives_the_same_trial_results(tmp_path):
    path = tmp_path / "sigmoid.py"
    path.write_text(SIGMOID_VARYING_WIDTHS)
    _, first = trials_for(path, only=("relu-kaiming", "residual"), steps=6)
    _, again = trials_for(path, only=("relu-kaiming", "residual"), steps=6)
    assert [t.verdict for t in first] == [t.verdict for t in again]
    for a, b in zip(first, again):
        assert a.after == b.after and a.before == b.before
        if a.record is not None:
            assert a.record.scalars["loss"] == b.record.scalars["loss"]


# Widths change at every layer: no block keeps its input's shape, so a residual cannot apply.
SIGMOID_VARYING_WIDTHS = textwrap.dedent(
    """
    from torch import nn

    WIDTHS = [32, 48, 40, 56, 24, 36, 44, 20, 28]

    def build_model():
        layers = []
        for a, b in zip(WIDTHS, WIDTHS[1:]):
            layers += [nn.Linear(a, b), nn.Sigmoid()]
        layers.append(nn.Linear(WIDTHS[-1], 5))
        return nn.Sequential(*layers)
    """
)


def test_a_fix_that_cannot_apply_is_not_tried_with_its_reason(tmp_path):
    path = tmp_path / "sigmoid.py"
    path.write_text(SIGMOID_VARYING_WIDTHS)
    _, trials = trials_for(path, only=("residual",), steps=3)
    (trial,) = trials
    assert trial.verdict == "not tried" and trial.record is None and trial.after == {}
    assert "in_features == out_features" in trial.reason
    assert trial.before["first_last_ratio"] is not None  # the before is still shown


FAILS_WITHOUT_SIGMOID = textwrap.dedent(
    """
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.Sequential(*[m for _ in range(8) for m in (nn.Linear(16, 16), nn.Sigmoid())])
            self.head = nn.Linear(16, 4)

        def forward(self, x):
            if not isinstance(self.layers[1], nn.Sigmoid):
                raise RuntimeError("this model insists on its sigmoids")
            return self.head(self.layers(x))

    def build_model():
        return Net()
    """
)


def test_a_trial_that_raises_in_the_users_code_fails_with_its_message_and_the_others_go_on(tmp_path):
    path = tmp_path / "picky.py"
    path.write_text(FAILS_WITHOUT_SIGMOID)
    _, trials = trials_for(path, only=("relu-kaiming", "batchnorm"), steps=4)
    found = by_fix(trials)
    assert found["relu-kaiming"].verdict == "failed"
    assert "this model insists on its sigmoids" in found["relu-kaiming"].reason
    assert found["batchnorm"].verdict not in ("failed", "not tried")
    assert found["batchnorm"].record is not None


def test_dead_relu_cnn_leaky_relu_lowers_the_dead_fraction():
    _, trials = trials_for(SAMPLES / "cnn_dead_relu.py", only=("leaky-relu", "kaiming-init"), steps=4, batch_size=8)
    found = by_fix(trials)
    leaky = found["leaky-relu"]
    assert leaky.finding == "dead-relu"
    assert leaky.before["dead_fraction"] > 0.9
    assert leaky.after["dead_fraction"] < leaky.before["dead_fraction"]
    assert leaky.verdict in ("fixed", "improved"), (leaky.reason, leaky.after)
    # Kaiming init with zero biases undoes the -10 biases: the units are alive again
    assert found["kaiming-init"].after["dead_fraction"] < 0.5


def test_overfitting_dropout_narrows_the_gap_over_several_seeds():
    gaps_before, gaps_after = [], []
    for seed in (0, 1, 2):
        _, trials = trials_for(SAMPLES / "overfitting_mlp.py", only=("dropout", "early-stopping"), steps=40, seed=seed)
        found = by_fix(trials)
        dropout = found["dropout"]
        assert "nn.Dropout(p=0.5)" in dropout.code and "keep_prob = 0.5" in dropout.code
        gaps_before.append(dropout.before["relative_gap"])
        gaps_after.append(dropout.after["relative_gap"])
        early = found["early-stopping"]
        assert early.record is None and "no retraining" in early.reason
        assert early.after["val_loss"] <= early.before["val_loss"]
    assert mean(gaps_after) < mean(gaps_before), (gaps_before, gaps_after)


def test_try_fixes_api_healthy_model_has_no_trials():
    torch.manual_seed(0)

    def build_model():
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))

    assert try_fixes(build_model, steps=3) == []


def test_try_fixes_api_on_functions():
    def build_model():
        layers = []
        for _ in range(8):
            layers += [nn.Linear(16, 16), nn.Sigmoid()]
        return nn.Sequential(*layers, nn.Linear(16, 3))

    def make_batch(batch_size):
        return torch.randn(batch_size, 16), torch.randint(0, 3, (batch_size,))

    trials = try_fixes(build_model, make_batch, steps=5, seed=3, fixes=["batchnorm"])
    assert [(t.finding, t.fix) for t in trials] == [("vanishing-gradients", "batchnorm")]
    assert trials[0].record is not None and trials[0].verdict in ("fixed", "improved")


def test_unknown_fix_id_is_a_clear_error():
    with pytest.raises(gradscope.GradscopeError, match="unknown fix id.*'relu'.*relu-kaiming"):
        try_fixes(lambda: nn.Linear(2, 2), steps=1, fixes=["relu"])
