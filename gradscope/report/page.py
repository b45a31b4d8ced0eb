"""The run report's content as plain data, before any HTML: what the page says, not how.

`build_report_page` reads a RunRecord and its Diagnosis once and returns a `ReportPage`;
`gradscope.report.html` only turns it into markup. Tests can check the content here
without parsing HTML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ..diagnose.coverage import Coverage, Gap, coverage, legend_lines
from ..diagnose.finding import SKIPPED, Diagnosis, Finding, severity_rank
from ..diagnose.reading import SUMMARY_DESCRIPTION
from ..number_format import HTML, format_number
from ..record import RunRecord
from ..statdefs import STATS_BY_NAME
from .figures import RenderedFigure
from .plots import build_figures
from .series import display_name

MAX_VERDICT_TITLES = 3
MAX_FINDING_LAYERS = 25
MAX_EVIDENCE_ITEMS = 12


@dataclass
class Verdict:
    severity: str  # "error" | "warning" | "info" | "ok" | "unknown" (no diagnosis was run)
    sentence: str


@dataclass
class FindingView:
    anchor: str
    code: str
    severity: str
    title: str
    message: str
    recommendation: str
    snippet: str
    layers: list[str]  # display names, at most MAX_FINDING_LAYERS
    more_layers: int  # how many were left out
    steps: str  # "0-190 (20 steps)" or ""
    evidence: list[tuple[str, str]]


@dataclass(frozen=True)
class LayerColumn:
    stat: str
    heading: str
    definition: str


# The statistics of the per-layer table, in the order a reader follows the gradient.
LAYER_COLUMNS: tuple[LayerColumn, ...] = tuple(
    LayerColumn(stat, heading, STATS_BY_NAME[stat].definition)
    for stat, heading in (
        ("grad_rms", "grad RMS"),
        ("grad_max", "max |g|"),
        ("update_ratio", "update/weight"),
        ("backprop_norm", "\u2016dL/dy\u2016"),
        ("act_sparsity", "sparsity"),
        ("act_dead_frac", "dead units"),
        ("act_saturation", "saturation"),
    )
)


@dataclass
class LayerRow:
    index: int
    name: str  # display name
    type: str
    activation: Optional[str]
    num_params: int
    values: list[Optional[float]]  # one per LAYER_COLUMNS entry
    gaps: list[Optional[Gap]]  # where a value is None: why it was not measured
    finding_codes: list[str]  # findings that name this layer
    worst: Optional[str]  # worst severity among them


@dataclass
class ReportPage:
    title: str
    verdict: Verdict
    findings: list[FindingView]
    figures: list[RenderedFigure]
    columns: tuple[LayerColumn, ...]
    layers: list[LayerRow]
    summary: list[tuple[str, str]]  # header line: model, parameters, steps
    run_info: list[tuple[str, str]]  # run metadata table
    options: list[tuple[str, str]]
    notes: list[str] = field(default_factory=list)
    # (cell word, what it means) for the layer table's empty cells; the one line when no activation
    # statistic could be measured anywhere (coverage.Coverage.activation_note)
    not_measured: list[tuple[str, str]] = field(default_factory=list)
    activation_note: Optional[str] = None
    # Fix trials (gradscope.fixes.FixTrial) and the base run they were compared with; empty: no section.
    fix_trials: list[Any] = field(default_factory=list)
    base_record: Optional[RunRecord] = None


def build_report_page(
    record: RunRecord,
    diagnosis: Optional[Diagnosis],
    title: Optional[str] = None,
    figures: Optional[list[RenderedFigure]] = None,
) -> ReportPage:
    """`figures`: from `plots.build_figures` when the caller already drew them (e.g. for --png too)."""
    findings = list(diagnosis) if diagnosis is not None else []
    views = [_finding_view(f, i) for i, f in enumerate(findings)]
    cover = coverage(record)
    layers = _layer_rows(record, cover, findings, {f.code: v.anchor for f, v in zip(findings, views)})
    return ReportPage(
        title=title or f"gradscope report: {record.meta.model_class or 'model'}",
        verdict=_verdict(diagnosis),
        findings=views,
        figures=figures if figures is not None else build_figures(record, diagnosis),
        columns=LAYER_COLUMNS,
        layers=layers,
        summary=[
            ("Model", record.meta.model_class or "unknown"),
            ("Parameters", _number(record.meta.num_params)),
            ("Recorded steps", _number(len(record.steps))),
            ("Layers", _number(len(record.modules))),
        ],
        run_info=_run_info(record),
        options=[(str(k), _describe(v)) for k, v in record.meta.options.items()],
        notes=list(record.meta.notes) + _hook_error_notes(record),
        not_measured=legend_lines([gap for layer in layers for gap in layer.gaps if gap is not None]),
        activation_note=cover.activation_note(),
    )


def _verdict(diagnosis: Optional[Diagnosis]) -> Verdict:
    if diagnosis is None:
        return Verdict(
            "unknown", "No diagnosis was run on this record; the figures and tables show the raw statistics."
        )
    # "not checked" notes say what was not looked at; they are not findings about the model
    counts = {sev: sum(1 for f in diagnosis if f.severity == sev and f.code != SKIPPED) for sev in ("error", "warning", "info")}
    problems = diagnosis.at_least("warning")
    if not problems:
        notes = counts["info"]
        extra = f" {notes} note{'s' if notes != 1 else ''} below." if notes else ""
        return Verdict("ok", "No problems found." + extra)
    worst = diagnosis.worst_severity() or "warning"
    worst_findings = [f for f in diagnosis if f.severity == worst]
    titles = [f.title.rstrip(".") for f in worst_findings[:MAX_VERDICT_TITLES]]
    rest = len(worst_findings) - len(titles)
    named = "; ".join(titles) + (f"; and {rest} more" if rest else "")
    tally = _count_phrase(counts)
    return Verdict(worst, f"{tally}. Most severe: {named}.")


def _count_phrase(counts: dict[str, int]) -> str:
    nouns = {"error": ("error", "errors"), "warning": ("warning", "warnings"), "info": ("note", "notes")}
    parts = [f"{n} {nouns[sev][n != 1]}" for sev, n in counts.items() if n]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _finding_view(finding: Finding, index: int) -> FindingView:
    layers = [display_name(n) for n in finding.layers]
    shown = layers[:MAX_FINDING_LAYERS]
    return FindingView(
        anchor=f"finding-{index + 1}",
        code=finding.code,
        severity=finding.severity if finding.severity in ("error", "warning", "info") else "info",
        title=finding.title,
        message=finding.message,
        recommendation=finding.recommendation,
        snippet=finding.snippet,
        layers=shown,
        more_layers=len(layers) - len(shown),
        steps=_steps_phrase(finding.steps),
        evidence=[(str(k), _describe(v)) for k, v in list(finding.evidence.items())[:MAX_EVIDENCE_ITEMS]],
    )


def _steps_phrase(steps: list[int]) -> str:
    if not steps:
        return ""
    if len(steps) == 1:
        return f"step {steps[0]}"
    return f"steps {min(steps)}\u2013{max(steps)} ({len(steps)} recorded)"


def _describe(value: Any, limit: int = 10) -> str:
    """Evidence and option values as short text (escaping happens when the page is rendered)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _number(value)
    if isinstance(value, (list, tuple)):
        items = [_describe(v, limit) for v in value[:limit]]
        return ", ".join(items) + (f", \u2026 ({len(value)} in all)" if len(value) > limit else "")
    if isinstance(value, dict):
        items = [f"{k}={_describe(v, limit)}" for k, v in list(value.items())[:limit]]
        return ", ".join(items) + (f", \u2026 ({len(value)} in all)" if len(value) > limit else "")
    return str(value)


def _layer_rows(
    record: RunRecord, cover: Coverage, findings: list[Finding], anchors: dict[str, str]
) -> list[LayerRow]:
    named: dict[str, list[Finding]] = {}
    for finding in findings:
        for layer in finding.layers:
            named.setdefault(layer, []).append(finding)
    rows = []
    for index, module in enumerate(record.modules):
        involved = named.get(module.name, [])
        worst = max((f.severity for f in involved), key=_rank, default=None)
        cells = [cover.cell(module, column.stat) for column in LAYER_COLUMNS]
        rows.append(
            LayerRow(
                index=index,
                name=display_name(module.name),
                type=module.type,
                activation=module.activation,
                num_params=module.num_params,
                values=[value for value, _ in cells],
                gaps=[gap for _, gap in cells],
                finding_codes=list(dict.fromkeys(f.code for f in involved)),
                worst=worst,
            )
        )
    return rows


def _rank(severity: str) -> int:
    try:
        return severity_rank(severity)
    except ValueError:
        return -1


def _run_info(record: RunRecord) -> list[tuple[str, str]]:
    meta = record.meta
    steps = record.steps
    step_range = f"{len(steps)} ({steps[0]}\u2013{steps[-1]}, every {meta.every})" if steps else "none"
    info = [
        ("Model class", meta.model_class or "unknown"),
        ("Parameters", f"{_number(meta.num_params)} ({_number(meta.trainable_params)} trainable)"),
        ("Recorded steps", step_range),
        ("Skipped steps (non-finite gradients)", _describe(record.skipped_steps) if record.skipped_steps else "none"),
        ("Gradients read", {"optimizer": "at optimizer.step()", "backward": "after each backward()"}.get(
            meta.grad_source, meta.grad_source)),
        ("Optimizer", meta.optimizer or "not given"),
        ("Statistics summarised as", SUMMARY_DESCRIPTION),
        ("gradscope version", meta.gradscope_version or "unknown"),
        ("torch version", meta.torch_version or "unknown"),
        ("Python version", meta.python_version or "unknown"),
    ]
    if meta.created:
        info.append(("Recorded at", meta.created))
    return info


def _hook_error_notes(record: RunRecord) -> list[str]:
    return [
        f"A gradscope hook failed at {e.where} ({e.count}\u00d7 from step {e.first_step}): {e.error}. "
        "Training went on; statistics of that hook may be missing."
        for e in record.hook_errors
    ]


def _number(value: Optional[float]) -> str:
    return format_number(value, HTML)
