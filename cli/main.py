"""The `gradscope` command group. Each command lives in its own module."""

from __future__ import annotations

import click

import gradscope

from .analyze import analyze_command
from .compare import compare_command
from .export import export_command
from .report_cmd import report_command
from .sweep import sweep_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(gradscope.__version__, prog_name="gradscope")
def main() -> None:
    """Gradient-flow diagnostics for PyTorch: where does my gradient die, and what do I change?"""


main.add_command(analyze_command)
main.add_command(report_command)
main.add_command(compare_command)
main.add_command(sweep_command)
main.add_command(export_command)


if __name__ == "__main__":  # pragma: no cover
    main()
