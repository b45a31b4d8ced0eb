"""The README is the contract with users and CI: keep it in step with the code."""

from __future__ import annotations

import re
from pathlib import Path

from gradscope.statdefs import STAT_NAMES

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, flags=re.S)


def test_ci_runs_exactly_the_readme_test_command():
    test_commands = [line for block in _bash_blocks() for line in block.splitlines() if "pytest" in line]
    assert len(test_commands) == 1, test_commands
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_commands[0].strip() in ci_lines


def test_readme_main_job_runs_a_bundled_sample():
    main_job = next(line for block in _bash_blocks() for line in block.splitlines() if "gradscope analyze" in line)
    sample = re.search(r"gradscope analyze (\S+)", main_job).group(1)
    assert (ROOT / sample).is_file()
    assert "torch==2.13.0" in main_job and "--html report.html" in main_job


def test_every_statistic_is_documented():
    missing = [name for name in STAT_NAMES if f"`{name}`" not in README]
    assert not missing


def test_the_overhead_budget_is_documented():
    assert "budget=0.02" in README and "--budget" in README and "record.intervals" in README
