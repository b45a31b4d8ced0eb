"""YAML thresholds: shipped defaults, user files merged over them, clear errors for bad files."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import gradscope
from gradscope.diagnose import ALL_RULES, Config, load_config
from gradscope.errors import ConfigError, GradscopeError
from tests.diagnose.builders import batches, classification_data, stack, train


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "thresholds.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def shipped_text() -> str:
    return resources.files("gradscope.diagnose").joinpath("defaults.yaml").read_text(encoding="utf-8")


def test_every_rule_has_a_section_with_exactly_the_keys_it_declares():
    sections = yaml.safe_load(shipped_text())
    assert sorted(sections) == sorted([rule.name for rule in ALL_RULES] + ["fixes"])  # fixes: the trials' section
    for rule in ALL_RULES:
        assert list(sections[rule.name]) == ["enabled", *rule.config_keys], rule.name


def test_every_key_in_the_shipped_yaml_is_commented():
    lines = shipped_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            above = lines[i - 1].strip()
            assert above.startswith("#"), f"no comment above {stripped!r}"


def test_defaults_and_merge():
    defaults = load_config()
    assert isinstance(defaults, Config) and defaults.section("dead_relu")["warn_fraction"] == 0.4
    merged = defaults.merged({"dead_relu": {"warn_fraction": 1}})
    warn_fraction = merged.section("dead_relu")["warn_fraction"]
    assert warn_fraction == 1.0 and isinstance(warn_fraction, float)
    assert merged.section("dead_relu")["error_fraction"] == 0.9  # untouched keys keep their defaults
    assert defaults.section("dead_relu")["warn_fraction"] == 0.4  # the original is not changed


def test_empty_user_file_changes_nothing(tmp_path):
    assert load_config(write(tmp_path, "# only a comment\n")).to_dict() == load_config().to_dict()


@pytest.fixture(scope="module")
def saturated_record():
    torch.manual_seed(0)
    model = stack([16, 32, 32, 4], nn.Tanh)
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(6.0)
    return train(model, batches(*classification_data(128), 32, 3))


def test_user_thresholds_change_the_outcome_both_ways(tmp_path, saturated_record):
    assert "saturation" in gradscope.diagnose(saturated_record).codes()
    lenient = write(tmp_path, "saturation:\n  warn_fraction: 0.99\n")
    assert "saturation" not in gradscope.diagnose(saturated_record, lenient).codes()
    assert "saturation" not in gradscope.diagnose(saturated_record, str(lenient)).codes()
    # and a stricter threshold turns a healthy record's numbers into a finding
    torch.manual_seed(0)
    healthy = train(stack([16, 64, 64, 4], nn.ReLU), batches(*classification_data(128), 32, 3))
    assert "vanishing-gradients" not in gradscope.diagnose(healthy).codes()
    strict = write(tmp_path, "vanishing_gradients:\n  warn_ratio: 0.9\n  max_decay_per_layer: 0.95\n")
    finding = [f for f in gradscope.diagnose(healthy, load_config(strict)) if f.code == "vanishing-gradients"]
    assert finding and finding[0].evidence["warn_ratio"] == 0.9


def test_severity_thresholds_and_disabling(saturated_record):
    def severity(error_fraction):
        diagnosis = gradscope.diagnose(saturated_record, {"saturation": {"error_fraction": error_fraction}})
        return [f.severity for f in diagnosis if f.code == "saturation"]

    assert severity(0.0) == ["error"]
    assert severity(1.0) == ["warning"]
    off = gradscope.diagnose(saturated_record, {"saturation": {"enabled": False}})
    assert "saturation" not in off.codes()
    assert all(f.evidence.get("rule") != "saturation" for f in off)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("dead_relu: [1, 2\n", ["not valid YAML", "line 2"]),
        ("dead_rellu:\n  warn_fraction: 0.5\n", ["unknown section 'dead_rellu'", "dead_relu", "vanishing_gradients"]),
        ("dead_relu:\n  warn_frac: 0.5\n", ["unknown key 'warn_frac'", "'dead_relu'", "warn_fraction, error_fraction"]),
        ("dead_relu:\n  warn_fraction: lots\n", ["dead_relu.warn_fraction must be a number", "'lots'"]),
        ("update_ratio:\n  low: 1e-5\n", ["must be a number", "write 1.0e-3"]),
        ("dead_relu:\n  last_steps: 2.5\n", ["dead_relu.last_steps must be a whole number"]),
        ("dead_relu:\n  enabled: 1\n", ["dead_relu.enabled must be true or false"]),
        ("saturation:\n  warn_fraction: true\n", ["must be a number"]),
        ("saturation:\n  warn_fraction: -0.5\n", [">= 0"]),
        ("- dead_relu\n", ["top level must map rule sections"]),
        ("dead_relu: 0.5\n", ["section 'dead_relu' must map keys to values", "warn_fraction"]),
    ],
)
def test_bad_yaml_gives_one_clear_paragraph(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    for part in expected:
        assert part in message, message
    assert "\n" not in message and str(path) in message
    assert isinstance(caught.value, GradscopeError)


def test_missing_file_and_wrong_config_type(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="config must be"):
        gradscope.diagnose(gradscope.RunRecord(), config=42)
    with pytest.raises(GradscopeError, match="needs a RunRecord"):
        gradscope.diagnose("run.json")
    with pytest.raises(ConfigError, match="unknown key 'bogus'"):
        gradscope.diagnose(gradscope.RunRecord(), config={"nonfinite": {"bogus": 1}})


def test_load_config_is_exported_at_the_top_level(tmp_path):
    config = gradscope.load_config(write(tmp_path, "batchnorm:\n  min_batch_size: 32\n"))
    assert config.section("batchnorm")["min_batch_size"] == 32
    assert config.sources[-1].endswith("thresholds.yaml")
