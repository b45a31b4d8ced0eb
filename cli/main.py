"""The `gradscope` command group. Each command lives in its own module."""

from __future__ import annotations

import click

import gradscope


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(gradscope.__version__, prog_name="gradscope")
def main() -> None:
    """Gradient-flow diagnostics for PyTorch: where does my gradient die, and what do I change?"""


if __name__ == "__main__":  # pragma: no cover
    main()
