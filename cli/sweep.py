"""`gradscope sweep`: the vanishing-gradient experiment (activations x depths x norms x dropouts) in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, TypeVar

import click

from gradscope.io import RenderedFile, write_all
from gradscope.outputs import OutputPaths
from gradscope.report.sweep_table import render_table as sweep_table
from gradscope.sweep import INITS, SweepOptionError, SweepResult, bundled_task, load_npz, sweep
from gradscope.sweep.reading import describe

from .common import EXIT_OK, display_path, run_guarded, stderr_is_terminal

T = TypeVar("T")


@click.command("sweep")
@click.option("--activations", default="sigmoid,tanh,relu", show_default=True,
              help="Comma-separated activations: sigmoid, tanh, relu, leaky_relu, gelu, identity.")
@click.option("--depths", default="2,4,8,16,32", show_default=True, help="Comma-separated numbers of hidden layers.")
@click.option("--width", default="64", show_default=True, help="Units per hidden layer.")
@click.option("--norm", "norms", default="none", show_default=True,
              help="Comma-separated: none, batchnorm (BatchNorm1d before each activation).")
@click.option("--dropout", "dropouts", default="0", show_default=True,
              help="Comma-separated dropout probabilities p (PyTorch's p = 1 - keep_prob), e.g. 0,0.5.")
@click.option("--init", type=click.Choice(INITS), default="default", show_default=True,
              help="default: PyTorch's Linear init; xavier: xavier_uniform_ with the activation's gain; "
                   "kaiming: kaiming_normal_ (fan_in, gain sqrt 2), zero biases.")
@click.option("--steps", default="100", show_default=True, help="Full-batch SGD steps per network.")
@click.option("--lr", default="0.1", show_default=True, help="Learning rate (SGD, momentum 0.9).")
@click.option("--seed", default="0", show_default=True, help="Seed of every network's initial weights.")
@click.option("--data", "data_path", metavar="FILE.npz",
              help="Train on arrays X, y (optional X_val, y_val) instead of the bundled synthetic task.")
@click.option("--json", "json_path", metavar="PATH", help="Write the sweep (summaries and every run record) as JSON.")
@click.option("--html", "html_path", metavar="PATH", help="Write a self-contained HTML page with table and figures.")
@click.option("--png", "png_dir", metavar="DIR", help="Write the sweep figures as PNGs into DIR (created if missing).")
@click.option("--quiet", is_flag=True, help="Print nothing but errors (no table, no progress bar).")
def sweep_command(
    activations: str, depths: str, width: str, norms: str, dropouts: str, init: str, steps: str, lr: str,
    seed: str, data_path: Optional[str], json_path: Optional[str], html_path: Optional[str],
    png_dir: Optional[str], quiet: bool,
) -> None:
    """Train the same MLP at every activation x depth (x norm x dropout) and show how the gradient
    signal decays layer by layer: the vanishing-gradient experiment, on bundled data."""

    def body() -> int:
        options = dict(
            activations=parse_list("--activations", activations, str),
            depths=parse_list("--depths", depths, int),
            width=parse_one("--width", width, int),
            norms=parse_list("--norm", norms, str),
            dropouts=parse_list("--dropout", dropouts, float),
            init=init,
            steps=parse_one("--steps", steps, int),
            lr=parse_one("--lr", lr, float),
            seed=parse_one("--seed", seed, int),
        )
        outputs = OutputPaths.from_options(json_path, html_path, png_dir)
        outputs.check_writable()  # before training: a typo in --html must not cost a sweep
        data = load_npz(data_path) if data_path else bundled_task()
        with _progress_bar(enabled=not quiet and stderr_is_terminal()) as progress:
            result = sweep(**options, data=data, progress=progress)
        written = write_all(_render(result, outputs))
        if not quiet:
            click.echo(sweep_table(result))
            for line in describe(result):
                click.echo(line)
            for path in written:
                click.echo(f"Wrote {display_path(path)}", err=True)
        return EXIT_OK

    run_guarded(False, body)


def parse_list(flag: str, text: str, kind: Callable[[str], T]) -> list[T]:
    """'a,b, c' -> [kind(a), kind(b), kind(c)]; an empty item or a bad value is a user error."""
    items = [item.strip() for item in text.split(",")]
    if any(not item for item in items):
        raise SweepOptionError(
            f"{flag} {text!r} has an empty item; separate values with single commas, e.g. {flag} {_example(flag)}."
        )
    return [_convert(flag, item, kind) for item in items]


def parse_one(flag: str, text: str, kind: Callable[[str], T]) -> T:
    return _convert(flag, text.strip(), kind)


def _convert(flag: str, item: str, kind: Callable[[str], T]) -> T:
    try:
        return kind(item)
    except ValueError:
        noun = {int: "a whole number", float: "a number"}.get(kind, "a value")  # type: ignore[call-overload]
        raise SweepOptionError(f"{flag}: {item!r} is not {noun}; for example {flag} {_example(flag)}.") from None


def _example(flag: str) -> str:
    return {
        "--activations": "sigmoid,tanh,relu", "--depths": "2,4,8,16,32", "--norm": "none,batchnorm",
        "--dropout": "0,0.5", "--width": "64", "--steps": "100", "--lr": "0.1", "--seed": "0",
    }.get(flag, "...")


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
                                          item_show_func=lambda s: s.config.label if s else None)
            self._bar.__enter__()
        if done > self._shown:
            self._bar.update(done - self._shown, summary)
        self._shown = done

    def __exit__(self, *exc_info) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc_info)
