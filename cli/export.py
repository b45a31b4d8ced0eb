"""`gradscope export RUN --tensorboard DIR`: a saved run into the dashboards people already use."""

from __future__ import annotations

from typing import Optional

import click

import gradscope

from .common import config_option, debug_option, run_guarded


@click.command("export")
@click.argument("run_file", metavar="RUN")
@click.option(
    "--tensorboard",
    "tensorboard_dir",
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="Write TensorBoard event files into DIR (created if missing).",
)
@click.option(
    "--wandb",
    "wandb_project",
    metavar="PROJECT",
    help="Log into a new wandb run of PROJECT (WANDB_MODE=offline keeps it on this machine).",
)
@click.option("--no-html", is_flag=True, help="Do not attach the HTML report.")
@config_option
@debug_option
def export_command(
    run_file: str,
    tensorboard_dir: Optional[str],
    wandb_project: Optional[str],
    no_html: bool,
    config_path: Optional[str],
    debug: bool,
) -> None:
    """Export a saved run to TensorBoard and/or wandb: per-layer series grouped by statistic
    (grad_rms/<layer>), summary scalars, the findings as text and the HTML report."""

    def body() -> int:
        from gradscope import export
        from gradscope.optional import require

        if not tensorboard_dir and not wandb_project:
            raise click.UsageError("Say where to export: --tensorboard DIR and/or --wandb PROJECT.")
        record = gradscope.RunRecord.load(run_file)
        diagnosis = gradscope.diagnose(record, gradscope.load_config(config_path))
        if tensorboard_dir:
            folder = export.to_tensorboard(record, tensorboard_dir, diagnosis, html=not no_html)
            click.echo(f"Wrote TensorBoard events to {folder} (tensorboard --logdir {folder})", err=True)
        if wandb_project:
            wandb = require("wandb", "wandb")
            run = wandb.init(project=wandb_project, job_type="gradscope-export")
            try:
                export.to_wandb(record, run, diagnosis, html=not no_html)
            finally:
                run.finish()
            click.echo(f"Logged {len(record.steps)} steps to wandb run {run.name or run.id}", err=True)
        return 0

    run_guarded(debug, body)
