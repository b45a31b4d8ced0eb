"""The HTML page of a depth sweep, built from the same blocks as the run report (`markup.render_page`).

    write_sweep_html("sweep.html", result)

Self-contained like the run report: inline CSS, figures as data: URIs, every text escaped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from ..io import write_file
from ..number_format import ratio
from ..sweep.networks import ACTIVATIONS
from ..sweep.reading import describe
from ..sweep.result import SweepResult
from ..sweep.summary import DIVERGED, ConfigSummary
from .html import Figure, Section, Table, render_page
from .markup import Cell, ShownNumber, element, join
from .sweep_plots import SweepFigure, build_sweep_figures

_COLUMNS = (
    ("activation", "activation after every hidden Linear layer"),
    ("depth", "number of hidden layers"),
    ("norm", "BatchNorm1d between each Linear and its activation, or none"),
    ("dropout", "PyTorch Dropout p after each activation (keep_prob = 1 - p)"),
    ("init", ("default: PyTorch's Linear init; recommended: Xavier with the activation's gain for sigmoid/tanh/"
              "identity, Kaiming (fan_in) for the ReLU family")),
    ("first/last at init", ("||dL/d act1|| / ||dL/d act_last|| at step 0: 1 is perfect flow, tiny is vanishing; "
                            "'< x' where the first layer's signal underflowed float32")),
    ("decay/layer at init", "fitted factor by which the signal changes per layer towards the input (1: none)"),
    ("first/last after", "the same ratio at the last recorded step"),
    ("decay/layer after", "the same fit at the last recorded step"),
    ("first loss", "training loss at step 0, from the initial weights"),
    ("train loss", "cross-entropy on the whole training set, eval mode, after training"),
    ("val loss", "cross-entropy on the validation set, eval mode, after training"),
    ("train acc", "accuracy on the training set after training"),
    ("val acc", "accuracy on the validation set after training"),
    ("gap", "val loss - train loss: bigger means more overfitting"),
    ("outcome", ("trained: final train loss below 95% of the first loss and of the class-frequency loss; "
                 "diverged: above the first loss")),
    ("seconds", "wall time of this configuration, recording included"),
    ("error", "why training stopped early, if it did"),
)


def render_sweep_html(
    result: SweepResult, title: Optional[str] = None, figures: Optional[list[SweepFigure]] = None
) -> str:
    """The complete page as one HTML document. `figures` reuses figures already drawn."""
    if figures is None:
        figures = build_sweep_figures(result)
    title = title or "gradscope depth sweep"
    meta = [
        ("configurations", str(len(result.summaries))),
        ("failed", str(len(result.failures))),
        ("time", f"{result.seconds:.1f} s on {result.workers} process{'es' if result.workers > 1 else ''}"),
    ]
    return render_page(title, sweep_sections(result, figures), meta=meta)


def write_sweep_html(
    path: str | os.PathLike[str], result: SweepResult, title: Optional[str] = None,
    figures: Optional[list[SweepFigure]] = None,
) -> Path:
    """Render fully, then write atomically: a failure leaves no file behind."""
    return write_file(path, render_sweep_html(result, title, figures).encode("utf-8"), "sweep HTML page")


def sweep_sections(result: SweepResult, figures: list[SweepFigure]) -> list[Section]:
    return [
        Section("Reading", _reading(result), anchor="reading"),
        Section("Results", "", tables=[_results_table(result)], anchor="results"),
        _figures_section(figures),
        Section("Setup", _setup_text(result), tables=[_options_table(result)], anchor="setup"),
    ]


def _reading(result: SweepResult):
    lines = describe(result) or ["No configuration produced numbers to read."]
    theory = (
        "Theory, per layer at width 64 and PyTorch's default init (weights U(\u00b11/\u221an), a factor \u221a(1/3) "
        "on the backward signal): sigmoid \u2248 0.14 (\u03c3' \u2264 1/4), ReLU \u2248 0.41 (half the units pass), "
        "tanh \u2248 0.58. At the recommended init, Kaiming (gain \u221a2) brings ReLU to \u2248 1 and Xavier with "
        "gain 5/3 brings tanh to about 1; sigmoid stays near 1/4 (\u03c3' \u2264 1/4: no init repairs it) and "
        "BatchNorm re-scales every layer. A flowing gradient is not enough to train: a deep network at a "
        "large learning rate can still diverge."
    )
    return join([element("ul", join(element("li", line) for line in lines)), element("p", theory)])


def _results_table(result: SweepResult) -> Table:
    rows, classes = [], []
    for s in result.summaries:
        c = s.config
        rows.append([
            c.activation, c.depth, c.norm, c.dropout, c.init,
            _ratio_cell(s, "init"), s.decay_factor_init, _ratio_cell(s, "final"), s.decay_factor_final,
            s.first_loss, s.train_loss, s.val_loss, s.train_accuracy, s.val_accuracy, s.generalization_gap,
            s.outcome, round(s.seconds, 2), s.error or "",
        ])
        classes.append("flagged-error" if s.error or s.outcome == DIVERGED else "")
    return Table(
        [name for name, _ in _COLUMNS], rows, column_notes=[note for _, note in _COLUMNS], row_classes=classes,
        caption="One row per configuration. Click a column heading to sort.",
    )


def _ratio_cell(summary: ConfigSummary, when: str) -> Cell:
    """The first/last ratio, or "< bound" (sorted as the bound) where it underflowed to 0."""
    value = getattr(summary, f"first_last_ratio_{when}")
    bound = summary.first_last_bound(when)
    return ShownNumber(bound, ratio(value, bound)) if value == 0 and bound is not None else value


def _figures_section(figures: list[SweepFigure]) -> Section:
    shown = [Figure(f.png, alt=f.title, caption=f.reading) for f in figures if f.png is not None]
    missing = [f for f in figures if f.png is None]
    body = ""
    if missing:
        body = element("ul", join(element("li", f"{f.title}: not drawn, {f.missing}.") for f in missing))
    return Section("Figures", body, figures=shown, anchor="figures")


def _setup_text(result: SweepResult) -> str:
    return (
        f"Data: {result.data_description}.\n\n"
        "Each network: depth hidden Linear(width) layers, each followed by the optional BatchNorm1d, the "
        "activation and the optional Dropout, then a Linear classifier head; all built from the same seed, "
        "trained full-batch with SGD (momentum 0.9) and cross-entropy while gradscope.watch recorded every "
        "step. Step 0 statistics are those of the initial weights.\n\n"
        f"Activations available: {', '.join(ACTIVATIONS)}."
    )


def _options_table(result: SweepResult) -> Table:
    rows = [[key, ", ".join(map(str, value)) if isinstance(value, list) else str(value)]
            for key, value in result.options.items()]
    return Table(["option", "value"], rows, caption="Options the sweep was run with", sortable=False)
