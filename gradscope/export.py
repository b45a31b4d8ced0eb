"""Exporters: a finished RunRecord into the dashboards people already look at (TensorBoard, wandb).

    gradscope.export.to_tensorboard(record, "runs/exp1")    # pip install "torch-gradscope[tensorboard]"
    gradscope.export.to_wandb(record)                       # pip install "torch-gradscope[wandb]"

Both write the same things: every per-layer statistic as its own series under a tag grouped by
statistic (`grad_rms/features.3`), so one chart per statistic can hold all layers; the summary
scalars of `gradscope.summary` (`gradscope/grad_norm_total`, ...); the scalars logged with
`run.log` (`logged/loss`); the findings as markdown; and the HTML report as a file. Neither
framework is imported until an exporter is called.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

from .diagnose import Diagnosis, diagnose
from .optional import require
from .record import RunRecord
from .statdefs import STAT_NAMES
from .summary import PREFIX, summary_scalars

ROOT_LAYER = "(root)"  # the tag component of the model itself, whose module name is ""
LOGGED_PREFIX = "logged/"
FINDINGS_TAG = PREFIX + "findings"
REPORT_FILE = "gradscope_report.html"


def layer_tag(stat: str, layer: str) -> str:
    """`grad_rms/features.3`: grouped by statistic, so a chart per statistic holds every layer."""
    return f"{stat}/{layer or ROOT_LAYER}"


def step_values(record: RunRecord) -> Iterator[tuple[int, dict[str, float]]]:
    """(step, {tag: value}) for every recorded step, in order: per-layer series, summary, logged scalars."""
    stats = [s for s in STAT_NAMES if any(s in columns for columns in record.layer_stats.values())]
    logged = {name: dict(pairs) for name, pairs in record.scalars.items()}
    for index, step in enumerate(record.steps):
        row: dict[str, float] = {}
        for stat in stats:
            for layer in record.layers:
                column = record.layer_stats.get(layer, {}).get(stat)
                if column is not None and column[index] is not None:
                    row[layer_tag(stat, layer)] = float(column[index])
        row.update(summary_scalars(record, index))
        for name, by_step in logged.items():
            if step in by_step:
                row[LOGGED_PREFIX + name] = float(by_step[step])
        yield step, row


def custom_scalars_layout(record: RunRecord) -> dict[str, dict[str, list[Any]]]:
    """TensorBoard's custom-scalars layout: one multi-line chart per statistic, every layer in it."""
    stats = [s for s in STAT_NAMES if any(s in columns for columns in record.layer_stats.values())]
    charts = {stat: ["Multiline", [f"^{stat}/"]] for stat in stats}
    charts["summary"] = ["Multiline", [f"^{PREFIX}"]]
    if record.scalars:
        charts["logged"] = ["Multiline", [f"^{LOGGED_PREFIX}"]]
    return {"gradscope": charts}


def findings_markdown(diagnosis: Diagnosis) -> str:
    """The findings as markdown (TensorBoard's text plugin and wandb render it)."""
    if not len(diagnosis):
        return "gradscope found no problems."
    parts = []
    for f in diagnosis:
        lines = [f"### [{f.severity}] {f.title} (`{f.code}`)", "", f.message]
        if f.layers:
            lines += ["", "Layers: " + ", ".join(f"`{name}`" for name in f.layers[:20])]
        if f.recommendation:
            lines += ["", f"**What to change:** {f.recommendation}"]
        if f.snippet:
            lines += ["", "```python", f.snippet.rstrip("\n"), "```"]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def to_tensorboard(
    record: RunRecord,
    log_dir: Any,
    diagnosis: Optional[Diagnosis] = None,
    html: bool = True,
) -> Path:
    """Write `record` as TensorBoard event files into `log_dir` (a path, or an open `SummaryWriter`).

    Per-layer series use `add_scalar` with `/`-grouped tags (never `add_scalars`, which makes one run
    folder per key); a custom-scalars layout puts each statistic's layers on one chart; the findings
    go to the text tab; `gradscope_report.html` is written beside the event files. Returns the folder.
    """
    require("tensorboard", "tensorboard")
    tensorboard = require("torch.utils.tensorboard", "tensorboard")
    diagnosis = diagnosis if diagnosis is not None else diagnose(record)
    own_writer = not hasattr(log_dir, "add_scalar")
    writer = tensorboard.SummaryWriter(log_dir=str(log_dir)) if own_writer else log_dir
    try:
        for step, row in step_values(record):
            for tag, value in row.items():
                writer.add_scalar(tag, value, global_step=step)
        writer.add_custom_scalars(custom_scalars_layout(record))
        writer.add_text(FINDINGS_TAG, findings_markdown(diagnosis), global_step=record.steps[-1] if record.steps else 0)
        folder = Path(writer.get_logdir())
        if html:
            from .report.html import write_html

            write_html(folder / REPORT_FILE, record, diagnosis, title="gradscope report")
    finally:
        if own_writer:
            writer.close()
        else:
            writer.flush()
    return folder


def to_wandb(record: RunRecord, run: Any = None, diagnosis: Optional[Diagnosis] = None, html: bool = True) -> Any:
    """Log `record` into a wandb run (`run`, else the active `wandb.run`, else a new one that is finished here).

    One `run.log` call per recorded step with a monotonic `step=`; the findings as a table in the last
    step's call; the HTML report as an artifact of type `gradscope-report`. If the run's own step is
    already past the record's first step (exporting after training), the steps are shifted to stay
    monotonic and every row carries `gradscope/step`, the training step, which the charts use as x axis.
    Returns the run.
    """
    wandb = require("wandb", "wandb")
    diagnosis = diagnosis if diagnosis is not None else diagnose(record)
    own_run = run is None and wandb.run is None
    if run is None:
        run = wandb.run if wandb.run is not None else wandb.init(project="gradscope", job_type="gradscope-export")
    try:
        _log_wandb_steps(wandb, run, record, diagnosis)
        if html:
            _log_wandb_report(wandb, run, record, diagnosis)
    finally:
        if own_run:
            run.finish()
    return run


def _log_wandb_steps(wandb: Any, run: Any, record: RunRecord, diagnosis: Diagnosis) -> None:
    first = record.steps[0] if record.steps else 0
    current = getattr(run, "step", 0) or 0
    shift = max(0, current - first)
    if shift:
        run.define_metric(PREFIX + "step")
        run.define_metric("*", step_metric=PREFIX + "step")
    findings = wandb.Table(
        columns=["severity", "code", "title", "layers", "message", "recommendation"],
        data=[[f.severity, f.code, f.title, ", ".join(f.layers), f.message, f.recommendation] for f in diagnosis],
    )
    rows = list(step_values(record))
    for position, (step, row) in enumerate(rows):
        if shift:
            row[PREFIX + "step"] = float(step)
        if position == len(rows) - 1:
            row[FINDINGS_TAG] = findings
        run.log(row, step=step + shift, commit=True)  # committed now: the summary holds the last step


def _log_wandb_report(wandb: Any, run: Any, record: RunRecord, diagnosis: Diagnosis) -> None:
    from .report.html import write_html

    with tempfile.TemporaryDirectory(prefix="gradscope-wandb-") as folder:
        path = write_html(Path(folder) / REPORT_FILE, record, diagnosis, title="gradscope report")
        artifact = wandb.Artifact(f"gradscope-report-{run.id}", type="gradscope-report")
        artifact.add_file(os.fspath(path))
        run.log_artifact(artifact)  # add_file copied the report into wandb's staging area
