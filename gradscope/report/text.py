"""The terminal report: a per-layer table in forward order, then the findings by severity.

`render_text` returns the report as a string; printing it is the caller's business.
`render_networks_text` does the same for several networks (a GAN), each under its own name.
"""

from __future__ import annotations

import textwrap
from typing import Any, Callable, Optional, Sequence

from tabulate import tabulate

from ..diagnose.coverage import coverage, legend_lines, legend_text
from ..diagnose.finding import SEVERITIES, SKIPPED, Diagnosis, Finding
from ..diagnose.reading import SUMMARY_DESCRIPTION
from ..network_runs import NetworkRun, network_names
from ..number_format import compact, percent
from ..record import RunRecord
from ..runinfo import BUDGET_NOTE_START

# (header, statistic, formatter): each the number the findings quote (reading.layer_summary). Two-line
# headers keep the columns as narrow as their numbers, leaving the width to the layer names.
COLUMNS: tuple[tuple[str, str, Callable[[Optional[float]], str]], ...] = (
    ("grad\nRMS", "grad_rms", compact),
    ("back-\nprop", "backprop_norm", compact),
    ("update\nratio", "update_ratio", compact),
    ("sparse", "act_sparsity", percent),
    ("dead", "act_dead_frac", percent),
    ("satu-\nrated", "act_saturation", percent),
)
_MIN_NAME = 12  # a layer column narrower than this is no longer readable
_MARKS = {"error": "E", "warning": "W"}
_ALIGN = ("left", "left", "left", *["right"] * len(COLUMNS))


def render_text(record: RunRecord, diagnosis: Diagnosis, width: int = 100) -> str:
    """The whole report, lines at most `width` characters (long snippet lines aside)."""
    parts = [_header(record, width), _table(record, diagnosis, width), _findings(diagnosis, width)]
    return "\n\n".join(p for p in parts if p) + "\n"


def render_networks_text(runs: Sequence[NetworkRun], width: int = 100) -> str:
    """Several networks' reports, each under its name (underlined); one network's is `render_text`'s."""
    if len(runs) == 1:
        return render_text(runs[0].record, runs[0].diagnosis or Diagnosis(), width)
    lines = _wrap(
        f"{len(runs)} networks, each trained by its own optimizer and recorded on its own: {network_names(runs)}",
        width, "",
    )
    parts = ["\n".join(lines)]
    for run in runs:
        report = render_text(run.record, run.diagnosis or Diagnosis(), width).rstrip("\n")
        parts.append(f"{run.name}\n{'=' * min(len(run.name), width)}\n{report}")
    return "\n\n\n".join(parts) + "\n"


def _header(record: RunRecord, width: int) -> str:
    meta = record.meta
    steps = record.steps
    chosen = "chosen by an overhead budget" if record.intervals else f"every {meta.every}"
    span = f"steps {steps[0]}..{steps[-1]} ({len(steps)} recorded, {chosen})" if steps else "no steps recorded"
    source = "at optimizer.step" if meta.grad_source == "optimizer" else "after each backward"
    lines = [
        f"gradscope report: {meta.model_class or 'model'}, {compact(meta.num_params)} parameters "
        f"({compact(meta.trainable_params)} trainable), optimizer {meta.optimizer or 'not given'}",
        f"{span}; gradients read {source}",
        f"gradscope {meta.gradscope_version or '?'}, torch {meta.torch_version or '?'}, created {meta.created or '?'}",
    ]
    if record.skipped_steps:
        lines.append(f"GradScaler skipped steps: {_short_list(record.skipped_steps)}")
    for note in meta.notes:
        if note.startswith(BUDGET_NOTE_START):  # which steps were recorded, and why
            lines += _wrap(note, width, "")
    return "\n".join(lines)


def _table(record: RunRecord, diagnosis: Diagnosis, width: int) -> str:
    if not record.steps or not record.modules:
        return "Per-layer statistics: none recorded."
    marks = _layer_marks(diagnosis)
    cover = coverage(record)
    rows, gaps = [], []
    for info in record.modules:
        cells = []
        for _, stat, fmt in COLUMNS:
            value, gap = cover.cell(info, stat)
            cells.append(fmt(value) if gap is None else gap.label)
            if gap is not None:
                gaps.append(gap)
        rows.append([marks.get(info.name, ""), info.name or "(root)", info.type, *cells])
    headers = ["", "layer", "type", *[h for h, _, _ in COLUMNS]]
    type_width = min(14, max(len(r[2]) for r in rows))
    name_width = max(len(r[1]) for r in rows)
    while True:
        shown = [[r[0], shorten_left(r[1], name_width), shorten_left(r[2], type_width), *r[3:]] for r in rows]
        table = tabulate(shown, headers=headers, tablefmt="simple", disable_numparse=True, colalign=_ALIGN)
        widest = max(len(line) for line in table.splitlines())
        if widest <= width or name_width <= _MIN_NAME:
            break
        name_width = max(_MIN_NAME, name_width - (widest - width))
    legend = f"Per-layer statistics in forward order, {SUMMARY_DESCRIPTION}; E/W: layer named in an error/warning"
    lines = _wrap(legend, width, "") + table.splitlines() + legend_text(legend_lines(gaps), width)
    note = cover.activation_note()
    if note:
        lines += _wrap(note, width, "  ")
    return "\n".join(lines)


def _findings(diagnosis: Diagnosis, width: int) -> str:
    findings = list(diagnosis)
    if not findings:
        return "Findings: none."
    # "not checked" notes say what was not looked at: counted apart, never as findings
    real = [f for f in findings if f.code != SKIPPED]
    counts = [_count(sum(f.severity == s for f in real), s) for s in reversed(SEVERITIES)]
    not_checked = len(findings) - len(real)
    blocks = ["Findings: " + ", ".join(counts) + (f" ({not_checked} not checked)" if not_checked else "")]
    for severity in reversed(SEVERITIES):
        group = [f for f in real if f.severity == severity]
        skipped = [f for f in findings if f.severity == severity and f.code == SKIPPED]
        if group:
            blocks.append(f"{severity.upper()} ({len(group)})")
            blocks.extend(_finding(f, width) for f in group)
        if skipped:
            lines = ["Not checked:"]
            for f in skipped:
                lines.extend(_wrap(f"- {f.message}", width, "  "))
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _count(n: int, severity: str) -> str:
    return f"{n} {severity}" + ("s" if n != 1 and severity != "info" else "")


def _finding(finding: Finding, width: int) -> str:
    lines = _wrap(f"[{finding.code}] {finding.title}", width, "    ")
    lines += _wrap(finding.message, width, "    ", first="    ")
    if finding.layers:
        more = f" (+{len(finding.layers) - 12} more)" if len(finding.layers) > 12 else ""
        lines += _wrap("Layers: " + ", ".join(finding.layers[:12]) + more, width, "      ", first="    ")
    if finding.steps:
        lines += _wrap(f"Steps: {_short_list(finding.steps)}", width, "      ", first="    ")
    evidence = _evidence_line(finding.evidence)
    if evidence:
        lines += _wrap("Evidence: " + evidence, width, "      ", first="    ")
    if finding.recommendation:
        lines += _wrap("Fix: " + finding.recommendation, width, "      ", first="    ")
    if finding.snippet:
        lines += ["      " + line if line else "" for line in finding.snippet.splitlines()]
    return "\n".join(lines)


def _evidence_line(evidence: dict[str, Any]) -> str:
    """The evidence as key=value, per-layer values included (`dead_fraction=fc1 1, fc2 0.5`)."""
    items = []
    for key, value in evidence.items():
        shown = _evidence_value(value)
        if shown:
            items.append(f"{key}={shown}")
    return "; ".join(items)


def _evidence_value(value: Any, limit: int = 8) -> str:
    if value is None or isinstance(value, (bool, str)):
        return str(value)
    if isinstance(value, (int, float)):
        return compact(value)
    if isinstance(value, dict):
        items = [f"{k or '(root)'} {_evidence_value(v)}" for k, v in list(value.items())[:limit]]
    elif isinstance(value, (list, tuple)):
        items = [_evidence_value(v) for v in value[:limit]]
    else:
        return ""
    more = len(value) - limit
    return ", ".join(items) + (f" and {more} more" if more > 0 else "") if items else "none"


def _layer_marks(diagnosis: Diagnosis) -> dict[str, str]:
    marks: dict[str, str] = {}
    for finding in diagnosis:  # most severe first, so the first mark wins
        mark = _MARKS.get(finding.severity)
        if mark:
            for name in finding.layers:
                marks.setdefault(name, mark)
    return marks


def shorten_left(text: str, limit: int) -> str:
    """Keep the end of a long name, where it differs from its neighbours, starting at a dot where one
    is near: "transformer.h.3.attn.c_proj" -> "…h.3.attn.c_proj". Never cut in the middle."""
    if len(text) <= limit:
        return text
    tail = text[len(text) - (limit - 1):]
    dot = tail.find(".")
    if 0 <= dot < len(tail) // 3:
        tail = tail[dot + 1:]
    return "…" + tail


def _wrap(text: str, width: int, indent: str, first: str = "") -> list[str]:
    lines = textwrap.wrap(
        text, width=width, initial_indent=first, subsequent_indent=indent, break_on_hyphens=False, break_long_words=False
    )
    return lines or [first]


def _short_list(steps: list[int], limit: int = 10) -> str:
    shown = ", ".join(str(s) for s in steps[:limit])
    return shown + (f", ... ({len(steps)} in all)" if len(steps) > limit else "")
