"""Helpers for the CLI tests: write a model file, run `gradscope` in-process via click's CliRunner."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from gradscope_cli.main import main

SAMPLES = Path(__file__).resolve().parents[2] / "samples"

# A tiny healthy model file: most tests only change one thing about it.
TINY_MODEL = """
    from torch import nn

    def build_model():
        return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))
"""


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def gradscope_cli():
    """Run `gradscope ARGS...` in this process; exceptions that escape the CLI fail the test."""
    runner = CliRunner()

    def invoke(*args) -> Outcome:
        result = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
        return Outcome(result.exit_code, result.stdout, result.stderr)

    return invoke


@pytest.fixture
def model_file(tmp_path):
    """Write a model file from (dedented) source and return its path."""

    def write(source: str, name: str = "model.py") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(source))
        return path

    return write


def assert_user_error(outcome: Outcome, *phrases: str) -> None:
    """Exit 2, one paragraph on stderr containing every phrase, no traceback, nothing on stdout."""
    assert outcome.exit_code == 2, (outcome.exit_code, outcome.stderr, outcome.stdout)
    message = outcome.stderr.strip()
    assert message.startswith("Error: "), message
    assert "\n" not in message, f"not one paragraph:\n{message}"
    assert "Traceback" not in outcome.stderr
    assert outcome.stdout == ""
    for phrase in phrases:
        assert phrase in message, f"{phrase!r} not in: {message}"


def files_under(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}
