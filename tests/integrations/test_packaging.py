"""Packaging: the distribution name, the extras, and an import of gradscope that stays light."""

from __future__ import annotations

import configparser
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import gradscope
from gradscope.optional import MissingExtraError, require

ROOT = Path(__file__).resolve().parents[2]
FRAMEWORKS = ("lightning", "pytorch_lightning", "transformers", "accelerate", "tensorboard", "wandb")


def test_importing_gradscope_imports_no_framework():
    code = (
        "import sys, gradscope, gradscope.export, gradscope.integrations; "
        f"print([m for m in {FRAMEWORKS!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_distribution_name_keeps_the_import_name_and_the_command():
    dist = metadata.distribution("torch-gradscope")
    assert dist.version == gradscope.__version__
    assert [ep.value for ep in dist.entry_points if ep.name == "gradscope"] == ["gradscope_cli.main:main"]


def test_every_bridge_has_an_extra_and_the_test_extra_installs_them_all():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    extras = {
        name: {line.split(">")[0].split("=")[0].strip() for line in value.strip().splitlines() if line.strip()}
        for name, value in config["options.extras_require"].items()
    }
    for extra in ("lightning", "transformers", "tensorboard", "wandb"):
        assert extras[extra] <= extras["all"] <= extras["test"] | {"pytest"}, extra
    assert "gradscope.integrations" in config["options"]["packages"]


def test_a_missing_extra_is_one_line_naming_the_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightning", None)
    with pytest.raises(MissingExtraError) as caught:
        require("lightning", "lightning")
    message = str(caught.value)
    assert "\n" not in message and message.endswith('pip install "torch-gradscope[lightning]"')
