"""The installed `gradscope` console script and the bundled hook-API sample, as a user runs them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from .conftest import SAMPLES

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _console_script():
    """The `gradscope` installed with this interpreter (a venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "gradscope"
    return str(beside) if beside.exists() else shutil.which("gradscope")


GRADSCOPE = _console_script()


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append(tag)


@pytest.mark.skipif(GRADSCOPE is None, reason="the package is not installed (pip install -e .)")
def test_readme_main_command(tmp_path):
    """`gradscope analyze samples/deep_sigmoid_mlp.py --html report.html`, from another folder."""
    result = subprocess.run(
        [GRADSCOPE, "analyze", str(SAMPLES / "deep_sigmoid_mlp.py"), "--html", "report.html"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1, result.stderr  # vanishing gradients is an error finding
    assert "[vanishing-gradients]" in result.stdout
    assert result.stderr.strip() == "Wrote report.html"  # stderr is not a terminal: no progress bar
    parser = _Tags()
    parser.feed((tmp_path / "report.html").read_text())
    assert "table" in parser.tags and "img" in parser.tags
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


@pytest.mark.skipif(GRADSCOPE is None, reason="the package is not installed (pip install -e .)")
def test_user_error_through_the_console_script(tmp_path):
    result = subprocess.run(
        [GRADSCOPE, "analyze", "nowhere.py"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: Model file 'nowhere.py' does not exist.")


def test_watch_training_sample_prints_the_per_layer_table():
    result = subprocess.run(
        [sys.executable, str(SAMPLES / "watch_training.py")], env=ENV, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "Per-layer statistics" in result.stdout
    assert "[vanishing-gradients]" in result.stdout  # the 6-layer sigmoid MLP shows the textbook finding


def test_all_commands_are_registered(gradscope_cli):
    outcome = gradscope_cli("--help")
    assert outcome.exit_code == 0
    listed = {line.split()[0] for line in outcome.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == {"analyze", "report", "compare", "sweep", "export"}


@pytest.mark.skipif(GRADSCOPE is None, reason="the package is not installed (pip install -e .)")
@pytest.mark.parametrize("quiet", [False, True])
def test_progress_bar_only_on_a_terminal_and_not_with_quiet(tmp_path, quiet):
    """stderr attached to a pseudo-terminal: the bar is drawn; --quiet turns it off."""
    import pty

    leader, follower = pty.openpty()
    args = [GRADSCOPE, "analyze", str(SAMPLES / "relu_bn_kaiming_mlp.py"), "--steps", "5", "--fail-on", "never"]
    try:
        result = subprocess.run(
            args + (["--quiet"] if quiet else []),
            cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=follower, text=True, timeout=300,
        )
        os.close(follower)
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal is closed once everything was read
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(leader)
    assert result.returncode == 0
    if quiet:
        assert b"Training" not in drawn and result.stdout == ""
    else:
        assert b"Training" in drawn and b"100%" in drawn
        assert "Per-layer statistics" in result.stdout  # the report itself stays on stdout
