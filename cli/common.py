"""What every gradscope command shares: error handling, exit codes, output options.

Exit codes (documented in the README):
  0  the command ran and found nothing at or above --fail-on
  1  findings at or above --fail-on
  2  a user error: a bad model file, option, config or path (one paragraph on stderr, no traceback)
  3  a bug in gradscope itself (the traceback is printed; please report it)
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import click

from gradscope.diagnose import Config, Diagnosis, Finding, diagnose
from gradscope.diagnose.finding import SKIPPED, severity_rank
from gradscope.errors import GradscopeError
from gradscope.io import RenderedFile, write_all
from gradscope.network_runs import NetworkRun
from gradscope.outputs import OutputPaths

EXIT_OK, EXIT_FINDINGS, EXIT_USER_ERROR, EXIT_INTERNAL_ERROR = 0, 1, 2, 3
FAIL_ON_CHOICES = ("info", "warning", "error", "never")


def run_guarded(debug: bool, body: Callable[[], int]) -> None:
    """Run a command's body and turn its outcome into an exit code.

    A `GradscopeError` is the user's to fix: its message alone (one paragraph) goes to stderr.
    `--debug` adds the full traceback, including the user's own exception it was raised from.
    """
    try:
        code = body()
    except GradscopeError as exc:
        if debug:
            click.echo("".join(traceback.format_exception(exc)).rstrip(), err=True)
        click.echo(f"Error: {in_flags(str(exc))}", err=True)
        raise click.exceptions.Exit(EXIT_USER_ERROR) from None
    except KeyboardInterrupt:
        click.echo("Interrupted; no output files were written.", err=True)
        raise click.exceptions.Exit(130) from None
    except (click.exceptions.Exit, click.ClickException):
        raise
    except Exception as exc:  # noqa: BLE001 - a bug of ours: say so, show everything
        click.echo("".join(traceback.format_exception(exc)).rstrip(), err=True)
        click.echo(
            "gradscope hit an internal error (the traceback above). This is a bug in gradscope, not in your "
            "model; please report it with the command you ran.",
            err=True,
        )
        raise click.exceptions.Exit(EXIT_INTERNAL_ERROR) from None
    raise click.exceptions.Exit(code)


# The library names its fields in backticks (`input_shape`, `device=cpu`), as a Python caller knows
# them; a user of the CLI knows them as these flags.
FLAG_OF_FIELD = {
    "steps": "--steps", "batch_size": "--batch-size", "lr": "--lr", "optimizer": "--optimizer", "seed": "--seed",
    "device": "--device", "every": "--every", "budget": "--budget", "val_every": "--val-every", "clip": "--clip",
    "input_shape": "--input-shape", "config": "--config",
    "data": "--data", "json": "--json", "html": "--html", "png_dir": "--png", "fixes_json": "--fixes-json",
    "store": "--store", "try_fixes": "--try-fixes",
}
_FIELD = re.compile(r"`(\w+)(?:=([^`]*))?`")


def in_flags(message: str) -> str:
    """A library message in the CLI's words: `input_shape` -> --input-shape, `device=cpu` -> --device cpu."""

    def flag(match: re.Match[str]) -> str:
        field, value = match.groups()
        if field not in FLAG_OF_FIELD:
            return match.group(0)  # a module or function name, not a field
        return FLAG_OF_FIELD[field] + (f" {value}" if value is not None else "")

    return _FIELD.sub(flag, message)


def exit_code_for(diagnosis: Diagnosis, fail_on: str) -> int:
    return EXIT_FINDINGS if findings_at_or_above(diagnosis, fail_on) else EXIT_OK


def findings_at_or_above(findings: Iterable[Finding], fail_on: str) -> bool:
    """Whether a finding about the model reaches `fail_on`.

    "This rule could not run" notes (e.g. no val_loss for the overfitting rule) say nothing about
    the model, so they never fail a run; otherwise `--fail-on info` would fail every run.
    """
    if fail_on == "never":
        return False
    rank = severity_rank(fail_on)
    return any(severity_rank(f.severity) >= rank and f.code != SKIPPED for f in findings)


def output_options_with(json_help: str, html_help: str = "Write a self-contained HTML report.") -> Callable:
    """--json / --html / --png, each command saying what its JSON and page hold."""

    def decorate(command: Callable) -> Callable:
        command = click.option(
            "--png", "png_dir", metavar="DIR", help="Write one PNG per figure into DIR (created if missing)."
        )(command)
        command = click.option("--html", "html_path", metavar="PATH", help=html_help)(command)
        return click.option("--json", "json_path", metavar="PATH", help=json_help)(command)

    return decorate


# `analyze` and `report`: the JSON is a run record.
output_options = output_options_with(
    "Write the run record (and its findings) as JSON, for `gradscope report` and `gradscope compare`."
)


def fail_on_option(default: str) -> Callable:
    return click.option(
        "--fail-on",
        type=click.Choice(FAIL_ON_CHOICES),
        default=default,
        show_default=True,
        help="Exit with status 1 when a finding has at least this severity.",
    )


def config_option(command: Callable) -> Callable:
    return click.option(
        "--config",
        "config_path",
        metavar="FILE.yaml",
        help="Diagnosis thresholds overriding the defaults (YAML; unknown keys are an error).",
    )(command)


def debug_option(command: Callable) -> Callable:
    return click.option("--debug", is_flag=True, help="On an error, show the full traceback.")(command)


def write_outputs(
    outputs: OutputPaths, record, diagnosis, title: Optional[str], quiet: bool, fix_trials=(), extra=()
) -> None:
    """Render everything to memory first, then write; say what was written on stderr.

    `extra` are files rendered elsewhere (the fix trials' JSON) written in the same all-or-nothing batch.
    """
    if not outputs.requested() and not extra:
        return
    files = outputs.render(record, diagnosis, title=title, fix_trials=fix_trials) if outputs.requested() else []
    write_rendered(outputs, files + list(extra), quiet)


def several_networks(
    runs: Sequence[NetworkRun], thresholds: Config, outputs: OutputPaths, title: str, fail_on: str, quiet: bool
) -> int:
    """Diagnose and report each network under its own heading (one JSON, one HTML page, PNGs prefixed
    with its name); the exit code counts every network's findings."""
    from gradscope.report.text import render_networks_text  # tabulate only when a report is printed

    for run in runs:
        run.diagnosis = diagnose(run.record, thresholds)
    report = render_networks_text(runs)  # rendered before any file is written
    if outputs.requested():
        write_rendered(outputs, outputs.render_networks(runs, title=title), quiet)
    if not quiet:
        click.echo(report.rstrip("\n"))
    findings = [finding for run in runs for finding in run.diagnosis or ()]
    return EXIT_FINDINGS if findings_at_or_above(findings, fail_on) else EXIT_OK


def write_rendered(outputs: OutputPaths, files: list[RenderedFile], quiet: bool) -> None:
    """Write rendered files all or nothing; say what was written on stderr."""
    written = write_all(files)
    if quiet:
        return
    pngs = [p for p in written if p.suffix == ".png" and outputs.png_dir is not None and p.parent == outputs.png_dir]
    for path in written:
        if path not in pngs:
            click.echo(f"Wrote {display_path(path)}", err=True)
    if outputs.png_dir is not None:
        click.echo(f"Wrote {len(pngs)} PNG figure(s) to {display_path(outputs.png_dir)}", err=True)


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def display_path(path: Path) -> str:
    """Relative to the current directory when below it, else as given."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)
    return str(path) if relative.startswith("..") else relative
