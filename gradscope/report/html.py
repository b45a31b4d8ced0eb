"""The HTML run report: one self-contained file a user can open offline or attach to a bug report.

    html = render_html(record, diagnosis)          # a complete document as a string
    write_html("report.html", record, diagnosis)   # the same, written atomically
    html = render_networks_html(runs)              # several networks (NetworkRun), each under its heading

Content comes from `page.build_report_page` (plain data); this module only lays it out as
`Section`s for `render_page`, the page machinery the depth sweep reuses:

    render_page("Depth sweep", [Section("Results", "text", tables=[Table(...)], figures=[Figure(png, alt)])])

To add a section: put what it shows into `ReportPage` (page.py: plain data, testable without
HTML), write a function `ReportPage -> Section | None` here (None leaves the section and its
link out), and list it in `SECTIONS` at the end of this module, in page order.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from ..diagnose.finding import Diagnosis
from ..io import write_file
from ..network_runs import NetworkRun, network_names
from ..record import RunRecord
from .figures import RenderedFigure
from .markup import (
    Absent,
    Figure,
    Markup,
    Section,
    Table,
    anchor_for,
    element,
    escape,
    inline_code,
    join,
    paragraphs,
    render_page,
)
from .page import FindingView, ReportPage, build_report_page

if TYPE_CHECKING:
    from ..fixes.trial import FixTrial

__all__ = [
    "Figure", "Markup", "Section", "Table", "escape", "render_html", "render_networks_html", "render_page", "write_html",
]


def render_html(
    record: RunRecord,
    diagnosis: Optional[Diagnosis],
    title: Optional[str] = None,
    figures: Optional[list[RenderedFigure]] = None,
    fix_trials: Optional[Sequence[FixTrial]] = None,
) -> str:
    """The complete report as one HTML document (CSS, script and figures inline).

    `figures` (from `plots.build_figures`) reuses figures already drawn, e.g. when PNGs are written too.
    `fix_trials` (from `gradscope.try_fixes` / `analyze --try-fixes`) adds a "Verified fixes" section.
    """
    page = build_report_page(record, diagnosis, title, figures)
    page.fix_trials, page.base_record = list(fix_trials or []), record
    return render_page(page.title, report_sections(page), meta=page.summary)


def render_networks_html(
    runs: Sequence[NetworkRun],
    title: Optional[str] = None,
    figures: Optional[Sequence[list[RenderedFigure]]] = None,
) -> str:
    """Several networks (a GAN's generator and discriminator) on one page, each under its own heading.

    Each network's sections are those of a one-network report, headed and anchored by its name
    ("generator", "generator: Findings", #generator-findings); the verdict's heading is the name.
    `figures` holds each network's drawn figures, in the order of `runs`.
    """
    sections: list[Section] = []
    summary: list[tuple[str, str]] = [("Networks", network_names(runs))]
    used: set[str] = set()
    for index, run in enumerate(runs):
        page = build_report_page(run.record, run.diagnosis, title, figures[index] if figures is not None else None)
        prefix = anchor_for(run.name)
        if prefix in used:
            prefix = f"{prefix}-{index + 1}"
        used.add(prefix)
        for view in page.findings:  # the per-layer table links to them: unique on the page
            view.anchor = f"{prefix}-{view.anchor}"
        for section in report_sections(page):
            section.heading = run.name if section.id == "verdict" else f"{run.name}: {section.heading}"
            section.anchor = f"{prefix}-{section.id}"
            sections.append(section)
        steps = dict(page.summary).get("Recorded steps", "0")
        summary.append((run.name, f"{page.verdict.severity}, {steps} recorded steps"))
    return render_page(title or f"gradscope report: {network_names(runs)}", sections, meta=summary)


def write_html(
    path: str | os.PathLike[str],
    record: RunRecord,
    diagnosis: Optional[Diagnosis],
    title: Optional[str] = None,
    figures: Optional[list[RenderedFigure]] = None,
) -> Path:
    """Render fully, then write atomically: a failure leaves no file behind."""
    document = render_html(record, diagnosis, title, figures)
    return write_file(path, document.encode("utf-8"), "HTML report")


def report_sections(page: ReportPage) -> list[Section]:
    """Every section in `SECTIONS` that has something to show, in page order."""
    built = (build(page) for build in SECTIONS)
    return [section for section in built if section is not None]


def _verdict_section(page: ReportPage) -> Section:
    return Section(
        "Verdict",
        element("p", inline_code(page.verdict.sentence)),
        anchor="verdict",
        css_class=f"verdict sev-{page.verdict.severity}",
    )


def _findings_section(page: ReportPage) -> Section:
    return Section("Findings", _findings_html(page.findings), anchor="findings")


def _findings_html(findings: list[FindingView]) -> Markup:
    if not findings:
        return element("p", "The rules found nothing to report.")
    return join(_finding_html(f) for f in findings)


def _finding_html(finding: FindingView) -> Markup:
    badge = element("span", finding.severity, class_=f"badge sev-{finding.severity}")
    code = element("span", f"[{finding.code}]", class_="code")
    heading = element("h3", join([badge, inline_code(finding.title), code], " "))
    parts = [heading, paragraphs(finding.message)]
    if finding.recommendation:
        advice = join([element("strong", "What to change:"), inline_code(finding.recommendation)], " ")
        parts.append(element("p", advice))
    if finding.snippet:
        parts.append(element("pre", element("code", finding.snippet)))
    if finding.layers:
        more = f" \u2026 and {finding.more_layers} more" if finding.more_layers else ""
        names = join([element("code", name) for name in finding.layers], ", ")
        parts.append(element("p", join([element("strong", "Layers:"), names, escape(more)], " "), class_="layers-list"))
    if finding.steps:
        parts.append(element("p", join([element("strong", "Steps:"), escape(finding.steps)], " ")))
    if finding.evidence:
        items = join(join([element("dt", key), element("dd", value)]) for key, value in finding.evidence)
        parts.append(element("dl", items, class_="evidence"))
    return element("article", join(parts), id=finding.anchor, class_=f"finding sev-{finding.severity}")


def _figures_section(page: ReportPage) -> Section:
    figures = [Figure(f.png, alt=f.title, caption=f.reading) for f in page.figures if f.png is not None]
    missing = [f for f in page.figures if f.png is None]
    body = Markup("")
    if missing:
        items = join(element("li", join([element("strong", f.title), escape(f.missing)], " \u2014 ")) for f in missing)
        body = element("ul", items, class_="missing")
    return Section("Figures", body, figures=figures, anchor="figures")


def _layers_section(page: ReportPage) -> Section:
    headings = ["#", "module", "type", "params"] + [c.heading for c in page.columns] + ["findings"]
    notes = ["forward (execution) order", "qualified module name", "module class (activation)",
             "parameters the module owns directly"]
    notes += [c.definition + " Median over the recorded steps." for c in page.columns]
    notes.append("findings that name this module")
    anchors = {f.code: f.anchor for f in page.findings}
    rows, classes = [], []
    for layer in page.layers:
        kind = f"{layer.type} ({layer.activation})" if layer.activation else layer.type
        codes = [code for code in layer.finding_codes if code in anchors]
        links = join([element("a", code, href=f"#{anchors[code]}") for code in codes], ", ")
        cells = [value if gap is None else Absent(gap.label, gap.reason) for value, gap in zip(layer.values, layer.gaps)]
        rows.append([layer.index, element("code", layer.name), kind, layer.num_params, *cells, links])
        classes.append({"error": "flagged-error", "warning": "flagged"}.get(layer.worst or "", ""))
    table = Table(headings, rows, column_notes=notes, row_classes=classes,
                  caption=f"{len(rows)} modules in forward order; numbers are medians over the recorded steps. "
                          "Where a number is missing, the cell says why (legend above; hover it for its own "
                          "reason). Click a column heading to sort.")
    glossary = join(join([element("dt", c.stat), element("dd", c.definition)]) for c in page.columns)
    explained = [element("summary", "What the columns mean"), element("dl", glossary, class_="glossary")]
    parts = [element("details", join(explained))]
    if page.activation_note:
        parts.append(element("p", inline_code(page.activation_note), class_="coverage-note"))
    if page.not_measured:
        legend = join(join([element("dt", label), element("dd", inline_code(meaning))]) for label, meaning in page.not_measured)
        heading = element("p", "Not measured, and why (hover a cell for its own reason):", class_="legend-heading")
        parts.append(join([heading, element("dl", legend, class_="glossary not-measured")]))
    return Section("Per-layer statistics", join(parts), tables=[table], anchor="layers")


def _run_section(page: ReportPage) -> Section:
    tables = [Table(["item", "value"], [[k, v] for k, v in page.run_info], sortable=False, css_class="kv")]
    if page.options:
        options = [[k, v] for k, v in page.options]
        tables.append(Table(["option", "value"], options, caption="Options the run was made with", sortable=False,
                            css_class="kv"))
    body = Markup("")
    if page.notes:
        body = element("ul", join(element("li", note) for note in page.notes))
    return Section("Run", body, tables=tables, anchor="run")


# The report's sections, in page order (see the module docstring to add one).
def _fixes_section(page: ReportPage) -> Optional[Section]:
    if not page.fix_trials or page.base_record is None:
        return None
    from .fixes import fixes_section  # only runs with fix trials draw the trial figures

    return fixes_section(page.fix_trials, page.base_record)


SECTIONS: tuple[Callable[[ReportPage], Optional[Section]], ...] = (
    _verdict_section,
    _findings_section,
    _fixes_section,  # right after the findings the trials answer
    _figures_section,
    _layers_section,
    _run_section,
)
