"""`gradscope sweep`: the vanishing-gradient experiment (activations x depths x norms x dropouts) in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from gradscope.io import RenderedFile, write_all
from gradscope.outputs import OutputPaths
from gradscope.report.sweep_table import render_table as sweep_table
from gradscope.sweep import (
    ACTIVATIONS,
    DEFAULT_ACTIVATIONS,
    DEFAULT_DEPTHS,
    DEFAULT_INITS,
    INITS,
    NORMS,
    SweepResult,
    bundled_task,
    load_npz,
    sweep,
)
from gradscope.sweep.reading import describe

from .common import EXIT_OK, debug_option, display_path, output_options_with, run_guarded, stderr_is_terminal


class CommaList(click.ParamType):
    """A comma-separated list whose items another click type converts and checks ('2,4, 8')."""

    name = "list"

    def __init__(self, item: click.ParamType, example: str, parse=None, noun: str = "") -> None:
        self.item = item  # checks each item (a range, a choice)
        self.example = example
        self.parse = parse  # int or float: turns the text into a number first, failing as "not {noun}"
        self.noun = noun

    def convert(self, value, param, ctx) -> list:
        if isinstance(value, (list, tuple)):  # already converted (a default given as a list)
            return list(value)
        items = [text.strip() for text in str(value).split(",")]
        if any(not text for text in items):
            self.fail(f"{value!r} has an empty item; separate values with single commas, e.g. {self.example}.",
                      param, ctx)
        converted = []
        for text in items:
            try:
                value = self.parse(text) if self.parse else text
            except ValueError:
                self.fail(f"{text!r} is not {self.noun}; give a comma-separated list, e.g. {self.example}.", param, ctx)
            try:
                converted.append(self.item.convert(value, param, ctx))
            except click.BadParameter as exc:
                self.fail(f"{exc.message} Give a comma-separated list, e.g. {self.example}.", param, ctx)
        return converted

    def get_metavar(self, param, ctx=None) -> str:
        return "A,B,..."


def _names(choices) -> CommaList:
    return CommaList(click.Choice(tuple(choices)), ",".join(tuple(choices)[:2]))


ACTIVATION_LIST = _names(ACTIVATIONS)
DEPTH_LIST = CommaList(click.IntRange(min=1), "2,4,8,16", parse=int, noun="a whole number")
NORM_LIST = _names(NORMS)
DROPOUT_LIST = CommaList(click.FloatRange(min=0.0, max=1.0, max_open=True), "0,0.5", parse=float, noun="a number")
INIT_LIST = _names(INITS)


def _joined(values) -> str:
    return ",".join(str(v) for v in values)


@click.command("sweep")
@click.option("--activations", type=ACTIVATION_LIST, default=_joined(DEFAULT_ACTIVATIONS), show_default=True,
              help=f"Comma-separated activations: {', '.join(ACTIVATIONS)}.")
@click.option("--depths", type=DEPTH_LIST, default=_joined(DEFAULT_DEPTHS), show_default=True,
              help="Comma-separated numbers of hidden layers.")
@click.option("--width", type=click.IntRange(min=1), default=64, show_default=True, help="Units per hidden layer.")
@click.option("--norm", "norms", type=NORM_LIST, default="none", show_default=True,
              help="Comma-separated: none, batchnorm (BatchNorm1d before each activation).")
@click.option("--dropout", "dropouts", type=DROPOUT_LIST, default="0", show_default=True,
              help="Comma-separated dropout probabilities p (PyTorch's p = 1 - keep_prob), 0 <= p < 1, e.g. 0,0.5.")
@click.option("--init", "inits", type=INIT_LIST, default=_joined(DEFAULT_INITS), show_default=True,
              help="Comma-separated inits; each network is trained once per init. default: PyTorch's Linear init; "
                   "recommended: the init made for the activation (Xavier with its gain for sigmoid/tanh/identity, "
                   "Kaiming fan_in for relu/leaky_relu/gelu); xavier: xavier_uniform_ with the activation's gain; "
                   "kaiming: kaiming_normal_ (fan_in, gain sqrt 2) for every activation. Every init but default "
                   "zeroes the biases.")
@click.option("--steps", type=click.IntRange(min=1), default=100, show_default=True,
              help="Full-batch SGD steps per network.")
@click.option("--lr", type=click.FloatRange(min=0.0, min_open=True), default=0.1, show_default=True,
              help="Learning rate (SGD, momentum 0.9).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of every network's initial weights.")
@click.option("--data", "data_path", metavar="FILE.npz",
              help="Train on arrays X, y (optional X_val, y_val) instead of the bundled synthetic task.")
@output_options_with(json_help="Write the sweep (summaries and every run record) as JSON.",
                     html_help="Write a self-contained HTML page with table, reading and figures.")
@click.option("--quiet", is_flag=True, help="Print nothing but errors (no table, no progress bar).")
@debug_option
def sweep_command(
    activations: list[str], depths: list[int], width: int, norms: list[str], dropouts: list[float],
    inits: list[str], steps: int, lr: float, seed: int, data_path: Optional[str], json_path: Optional[str],
    html_path: Optional[str], png_dir: Optional[str], quiet: bool, debug: bool,
) -> None:
    """Train the same MLP at every activation x depth (x norm x dropout), at PyTorch's default init
    and at the init recommended for each activation, and show how the gradient signal decays layer
    by layer: the vanishing-gradient experiment, on bundled data."""

    def body() -> int:
        outputs = OutputPaths.from_options(json_path, html_path, png_dir)
        outputs.check_writable()  # before training: a typo in --html must not cost a sweep
        data = load_npz(data_path) if data_path else bundled_task()
        with _progress_bar(enabled=not quiet and stderr_is_terminal()) as progress:
            result = sweep(activations=activations, depths=depths, width=width, norms=norms, dropouts=dropouts,
                           init=inits, steps=steps, lr=lr, seed=seed, data=data, progress=progress)
        written = write_all(_render(result, outputs))
        if not quiet:
            click.echo(sweep_table(result))
            for line in describe(result):
                click.echo(line)
            for path in written:
                click.echo(f"Wrote {display_path(path)}", err=True)
        return EXIT_OK

    run_guarded(debug, body)


def _render(result: SweepResult, outputs: OutputPaths) -> list[RenderedFile]:
    """Every requested file as bytes in memory, before anything is written."""
    files = []
    if outputs.json is not None:
        files.append(RenderedFile(outputs.json, result.to_json().encode("utf-8"), "JSON sweep result"))
    if outputs.html is None and outputs.png_dir is None:
        return files
    from gradscope.report.sweep_html import render_sweep_html
    from gradscope.report.sweep_plots import build_sweep_figures

    figures = build_sweep_figures(result)  # drawn once for the page and the PNGs
    if outputs.html is not None:
        files.append(RenderedFile(outputs.html, render_sweep_html(result, figures=figures).encode("utf-8"), "HTML page"))
    if outputs.png_dir is not None:
        files += [RenderedFile(Path(outputs.png_dir) / f"sweep_{f.stem}.png", f.png, "PNG figure")
                  for f in figures if f.png is not None]
    return files


class _progress_bar:
    """A click progress bar on stderr, as a `progress(done, total, summary)` callback; inert when disabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar = None
        self._shown = 0

    def __enter__(self):
        return self if self.enabled else None

    def __call__(self, done: int, total: int, summary) -> None:
        if self._bar is None:
            self._bar = click.progressbar(length=total, label="sweep", file=click.get_text_stream("stderr"),
                                          item_show_func=lambda s: s.config.label_with_init if s else None)
            self._bar.__enter__()
        if done > self._shown:
            self._bar.update(done - self._shown, summary)
        self._shown = done

    def __exit__(self, *exc_info) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc_info)
