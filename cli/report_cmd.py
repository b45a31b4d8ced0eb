"""`gradscope report RUN`: render a saved run (JSON or a run store) again, without re-running the model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

import gradscope
from gradscope.network_runs import load_runs
from gradscope.outputs import OutputPaths

from .common import (
    config_option,
    debug_option,
    exit_code_for,
    fail_on_option,
    output_options,
    run_guarded,
    several_networks,
    write_outputs,
)


@click.command("report")
@click.argument("run_file", metavar="RUN")
@config_option
@output_options
@fail_on_option("never")
@click.option("--quiet", is_flag=True, help="Do not print the table and findings.")
@debug_option
def report_command(
    run_file: str,
    config_path: Optional[str],
    json_path: Optional[str],
    html_path: Optional[str],
    png_dir: Optional[str],
    fail_on: str,
    quiet: bool,
    debug: bool,
) -> None:
    """Render a run saved with `gradscope analyze --json` or `--store` (or RunRecord.save, or a run store a
    watch streamed into, even one still being written): text, JSON, HTML, PNG.

    Findings are computed afresh from the saved statistics, so --config can change them.
    """

    def body() -> int:
        from gradscope.report.text import render_text  # the text renderer pulls in tabulate only when needed

        thresholds = gradscope.load_config(config_path)
        outputs = OutputPaths.from_options(json_path, html_path, png_dir)
        outputs.check_writable()
        runs = load_runs(run_file)
        title = f"gradscope: {Path(run_file).name}"
        if len(runs) > 1:  # `analyze --json` of a file that trains several networks (a GAN)
            return several_networks(runs, thresholds, outputs, title, fail_on, quiet)
        record = runs[0].record
        diagnosis = gradscope.diagnose(record, thresholds)
        report = render_text(record, diagnosis)
        write_outputs(outputs, record, diagnosis, title=title, quiet=quiet)
        if not quiet:
            click.echo(report.rstrip("\n"))
        return exit_code_for(diagnosis, fail_on)

    run_guarded(debug, body)
