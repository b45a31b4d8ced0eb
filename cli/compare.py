"""`gradscope compare A B`: two saved runs (JSON or run stores) side by side, findings fixed and introduced."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

import gradscope
from gradscope.compare import compare_runs, render_comparison

from .common import config_option, debug_option, fail_on_option, findings_at_or_above, run_guarded


@click.command("compare")
@click.argument("run_a", metavar="A")
@click.argument("run_b", metavar="B")
@config_option
@fail_on_option("never")
@debug_option
def compare_command(run_a: str, run_b: str, config_path: Optional[str], fail_on: str, debug: bool) -> None:
    """Show runs A and B (JSON files or run stores) side by side per layer and which findings B fixed or introduced.

    With --fail-on, exit with status 1 when B introduces a finding of at least that severity.
    """

    def body() -> int:
        thresholds = gradscope.load_config(config_path)
        record_a, record_b = gradscope.RunRecord.load(run_a), gradscope.RunRecord.load(run_b)
        label_a, label_b = _labels(run_a, run_b)
        comparison = compare_runs(
            record_a,
            record_b,
            gradscope.diagnose(record_a, thresholds),
            gradscope.diagnose(record_b, thresholds),
            label_a=label_a,
            label_b=label_b,
        )
        click.echo(render_comparison(comparison).rstrip("\n"))
        return 1 if findings_at_or_above(comparison.introduced, fail_on) else 0

    run_guarded(debug, body)


def _labels(a: str, b: str) -> tuple[str, str]:
    """File stems, unless they are equal (runs/a/run.json vs runs/b/run.json): then A and B."""
    stem_a, stem_b = Path(a).stem, Path(b).stem
    return (stem_a, stem_b) if stem_a != stem_b else ("A", "B")
