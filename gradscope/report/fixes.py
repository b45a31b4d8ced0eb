"""Fix trials in the reports: the "Verified fixes" table for the terminal and a section for the HTML page.

Each row says which finding a fix answered, the finding's key metric and the final training
loss before -> after, and the verdict; below it, the code that was applied (exactly the
source the trial executed). The HTML section adds one small figure per trial that ran: the
backprop signal per weight layer and the loss curves, base run and trial overlaid.
"""

from __future__ import annotations

import textwrap
from typing import Optional, Sequence

import matplotlib
from matplotlib.figure import Figure as MplFigure
from tabulate import tabulate

from ..diagnose.numbers import compact
from ..diagnose.reading import median_of, weight_layers
from ..fixes.trial import FixTrial
from ..record import RunRecord
from .figures import clean_style, draw_png
from .markup import Figure, Markup, Section, Table, element, join

FIGURE_PX = (720, 260)  # small: one per trial
_FRACTION_KEYS = ("dead_fraction", "saturated_fraction", "relative_gap")


def before_after(trial: FixTrial, key: str) -> str:
    """'1.9e-09 -> 0.31' for a metric of the trial ('-' where it was not measured)."""
    fmt = _percent if key in _FRACTION_KEYS else compact
    after = trial.after.get(key) if trial.after else None
    if trial.verdict in ("not tried",) or (trial.verdict == "failed" and not trial.after):
        return fmt(trial.before.get(key))
    return f"{fmt(trial.before.get(key))} -> {fmt(after)}"


def render_fixes_text(trials: Sequence[FixTrial], width: int = 100) -> str:
    """The "Verified fixes" block of the terminal report; empty when there were no trials."""
    if not trials:
        return ""
    rows = [
        [
            t.finding,
            t.fix,
            f"{t.key_metric}: {before_after(t, t.key_metric)}" if t.key_metric else "",
            before_after(t, "final_loss"),
            t.verdict,
        ]
        for t in trials
    ]
    table = tabulate(
        rows, headers=["finding", "fix", "key metric before -> after", "loss before -> after", "verdict"],
        tablefmt="simple", disable_numparse=True,
    )
    intro = (
        "Verified fixes: each fix applied to a fresh copy of the model (same seed, batches, optimizer settings and "
        "steps), then trained, measured and diagnosed again"
    )
    lines = [*textwrap.wrap(intro, width=width, break_long_words=False), table]
    for t in trials:
        head = f"[{t.finding} / {t.fix}] {t.verdict}" + (f": {t.reason}" if t.reason else "")
        lines.append("")
        lines += textwrap.wrap(head, width=width, subsequent_indent="    ", break_long_words=False)
        if t.verdict != "not tried":
            lines += textwrap.wrap(t.description, width=width, initial_indent="    ", subsequent_indent="    ",
                                   break_long_words=False)
        if t.code and t.verdict != "not tried":
            lines += ["      " + line if line else "" for line in t.code.splitlines()]
    return "\n".join(lines)


def fixes_section(trials: Sequence[FixTrial], base: RunRecord) -> Section:
    """The HTML section: the table, then per trial its code and its before/after figure."""
    rows = [
        [t.finding, t.fix, t.key_metric, before_after(t, t.key_metric), before_after(t, "final_loss"),
         before_after(t, "val_loss") if t.before.get("val_loss") is not None else None, t.verdict]
        for t in trials
    ]
    table = Table(
        ["finding", "fix", "key metric", "before \u2192 after", "loss before \u2192 after", "val loss", "verdict"],
        rows,
        caption="Each fix applied to a fresh copy of the model and trained with the same seed, batches, optimizer "
        "settings and steps as this run.",
        row_classes=[_row_class(t.verdict) for t in trials],
    )
    parts = []
    figures = []
    for t in trials:
        head = element("h3", join([element("code", f"{t.finding} / {t.fix}"), element("span", t.verdict, class_="code")], " "))
        body = [head, element("p", t.description + (f" ({t.reason})" if t.reason else ""))]
        if t.code and t.verdict != "not tried":
            body.append(element("pre", element("code", t.code)))
        parts.append(element("article", join(body), class_="finding"))
        if t.record is not None:
            png = trial_figure(base, t)
            if png is not None:
                figures.append(Figure(png, alt=f"{t.fix} for {t.finding}: backprop signal per layer and loss, before and after",
                                      caption=f"{t.finding} / {t.fix}: base run dashed, trial solid"))
    return Section("Verified fixes", join(parts), tables=[table], figures=figures, anchor="verified-fixes")


def trial_figure(base: RunRecord, trial: FixTrial) -> Optional[bytes]:
    """Backprop signal per weight layer (left) and training loss per step (right): base dashed, trial solid."""
    if trial.record is None:
        return None
    runs = ((base, "--", "before"), (trial.record, "-", "after"))

    def draw(figure: MplFigure) -> bool:
        signal, loss = figure.subplots(1, 2)
        for record, style, label in runs:
            values = _signal_profile(record)
            if values:
                signal.plot(range(1, len(values) + 1), values, style, marker=".", label=label)
            pairs = record.scalars.get("loss", [])
            if pairs:
                loss.plot([s for s, _ in pairs], [v for _, v in pairs], style, label=label)
        signal.set_yscale("log")
        signal.set_xlabel("weight layer (input \u2192 output)")
        signal.set_ylabel("backprop signal (median)")
        loss.set_xlabel("step")
        loss.set_ylabel("training loss")
        for ax in (signal, loss):
            ax.legend(loc="best", fontsize=7)
        return True

    with matplotlib.rc_context(clean_style({"font.size": 8})):
        return draw_png(FIGURE_PX, draw, title=f"{trial.finding} / {trial.fix}: {trial.verdict}")


def _signal_profile(record: RunRecord) -> list[float]:
    """Median backprop signal (else gradient RMS) per executed weight layer, in forward order; positives only."""
    layers = [m for m in weight_layers(record) if m.executed]
    for stat in ("backprop_norm", "grad_rms"):
        values = [median_of(record, stat, m.name) for m in layers]
        values = [v for v in values if v is not None and v > 0]
        if len(values) >= 2:
            return values
    return []


def _percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _row_class(verdict: str) -> str:
    return {"worse": "flagged-error", "failed": "flagged-error", "no effect": "flagged"}.get(verdict, "")


__all__ = ["Markup", "before_after", "fixes_section", "render_fixes_text", "trial_figure"]
