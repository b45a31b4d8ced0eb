"""`gradscope analyze MODEL.py`: train a model file for a few steps with gradscope attached."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Optional

import click

import gradscope
from gradscope.analyze import OPTIMIZERS, AnalyzeConfig, analyze_networks
from gradscope.analyze.batches import parse_input_shape
from gradscope.errors import ConfigError
from gradscope.outputs import OutputPaths, check_file_writable, fix_trial_files
from gradscope.store import check_store_path, write_store

from .common import (
    config_option,
    debug_option,
    exit_code_for,
    fail_on_option,
    output_options,
    run_guarded,
    several_networks,
    stderr_is_terminal,
    write_outputs,
)

_DEFAULTS = AnalyzeConfig()
_positive = click.IntRange(min=1)


@click.command("analyze")
@click.argument("model_file", metavar="MODEL.py")
@click.option("--steps", type=_positive, default=_DEFAULTS.steps, show_default=True, help="Training steps to run.")
@click.option("--batch-size", type=_positive, default=_DEFAULTS.batch_size, show_default=True, help="Batch size for synthesized data and make_batch.")
@click.option("--lr", type=float, default=None, help="Learning rate [default: make_optimizer's, else 0.01 for sgd, 1e-3 for adam].")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=None, help="Optimizer [default: the file's make_optimizer, else sgd with momentum 0.9].")
@click.option("--seed", type=click.IntRange(min=0), default=_DEFAULTS.seed, show_default=True, help="Seed for torch, random, numpy and the synthesized data.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=_DEFAULTS.device, show_default=True)
@click.option("--every", type=_positive, default=_DEFAULTS.every, show_default=True, help="Record every Nth step.")
@click.option(
    "--budget",
    type=float,
    default=None,
    metavar="FRACTION",
    help="Record as often as costs at most this fraction of the training step time (e.g. 0.02 for 2 %): gradscope "
    "times itself and chooses the interval; --every is then the shortest interval [default: every --every-th step].",
)
@click.option("--val-every", type=_positive, default=None, help="Evaluate val_data every Nth step [default: about ten times, evenly spaced].")
@click.option("--clip", type=click.FloatRange(min=0, min_open=True), default=None, help="Clip the total gradient norm at this value [default: the file's clip_grad_norm, else no clipping].")
@click.option("--input-shape", metavar="SHAPE", default=None, help="One input sample's shape without the batch dimension, e.g. 3x32x32.")
@config_option
@output_options
@click.option(
    "--try-fixes",
    is_flag=True,
    help="Try each recommended fix on a fresh copy of the model (same seed, batches, optimizer and steps) and report "
    "what it changed: a 'Verified fixes' table. Costs about one training run per fix.",
)
@click.option(
    "--fixes-json",
    metavar="FIXES.json",
    default=None,
    help="Write the fix trials to FIXES.json and each trial's run (plus the base run, FIXES.base.json) next to it, "
    "for `gradscope compare`. Implies --try-fixes.",
)
@click.option("--store", "store_path", metavar="PATH", help="Also save the run as a run store (SQLite, e.g. run.gsrun), for `gradscope report` and `compare`.")
@fail_on_option("error")
@click.option("--quiet", is_flag=True, help="Print nothing (no table, no progress bar); errors still go to stderr.")
@debug_option
def analyze_command(
    model_file: str,
    steps: int,
    batch_size: int,
    lr: Optional[float],
    optimizer: Optional[str],
    seed: int,
    device: str,
    every: int,
    budget: Optional[float],
    val_every: Optional[int],
    clip: Optional[float],
    input_shape: Optional[str],
    config_path: Optional[str],
    json_path: Optional[str],
    html_path: Optional[str],
    png_dir: Optional[str],
    try_fixes: bool,
    fixes_json: Optional[str],
    store_path: Optional[str],
    fail_on: str,
    quiet: bool,
    debug: bool,
) -> None:
    """Train MODEL.py for a few steps with gradscope attached; print per-layer statistics and findings.

    MODEL.py defines build_model() (or a module-level `model`) and optionally make_batch(batch_size),
    train_data()/val_data(), loss_fn(outputs, targets), make_optimizer(model) or
    make_optimizer(parameters), make_scheduler(optimizer), clip_grad_norm = 1.0 and
    train_step(model, batch, optimizer[, state]). It is executed as `python MODEL.py` would execute
    it, except that `if __name__ == "__main__":` blocks do not run. When make_optimizer returns
    several optimizers (a GAN's), each network they train is recorded and reported on its own.

    Exit status: 0 nothing at or above --fail-on, 1 findings at or above it, 2 a user error.
    """

    def body() -> int:
        from gradscope.report.text import render_text  # the text renderer pulls in tabulate only when needed

        if try_fixes or fixes_json:
            from gradscope.fixes import run_fix_trials
            from gradscope.report.fixes import render_fixes_text

        config = AnalyzeConfig(
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            optimizer=optimizer,
            seed=seed,
            device=device,
            every=every,
            budget=budget,
            val_every=val_every,
            clip=clip,
            input_shape=parse_input_shape(input_shape),
            config_path=config_path,
        )
        config.validate()
        thresholds = gradscope.load_config(config_path)  # a bad YAML fails now, not after training
        outputs = OutputPaths.from_options(json_path, html_path, png_dir)
        outputs.check_writable()
        fixes_path = Path(fixes_json) if fixes_json else None
        if fixes_path is not None:
            check_file_writable("fixes_json", fixes_path)
        if store_path is not None:
            check_store_path(store_path)
        # The model file's own print() calls go to stderr, so stdout is exactly the report (pipeable).
        started = time.perf_counter()
        one_record = _options_needing_one_record(store_path, try_fixes, fixes_json)
        with _progress(steps, enabled=not quiet and stderr_is_terminal()) as advance, contextlib.redirect_stdout(
            sys.stderr
        ):
            runs = analyze_networks(
                model_file, config, progress=advance,
                before_training=lambda names: _refuse_several(names, one_record, Path(model_file).name),
            )
        base_seconds = time.perf_counter() - started
        title = f"gradscope: {Path(model_file).name}"
        if len(runs) > 1:
            return several_networks(runs, thresholds, outputs, title, fail_on, quiet)
        record = runs[0].record
        diagnosis = gradscope.diagnose(record, thresholds)
        trials = []
        if try_fixes or fixes_path is not None:
            with contextlib.redirect_stdout(sys.stderr):
                trials = run_fix_trials(
                    model_file, config, record, diagnosis, thresholds, base_seconds=base_seconds,
                    progress=None if quiet else _report_trial,
                )
        report = render_text(record, diagnosis)  # rendered before any file is written
        if try_fixes or fixes_path is not None:
            report = report.rstrip("\n") + "\n\n" + (render_fixes_text(trials) or "Verified fixes: no finding at warning or error level has a fix to try.") + "\n"
        extra = fix_trial_files(fixes_path, trials, record, diagnosis) if fixes_path is not None else []
        write_outputs(outputs, record, diagnosis, title=title, quiet=quiet, fix_trials=trials, extra=extra)
        if store_path is not None:
            write_store(record, store_path)
            if not quiet:
                click.echo(f"Wrote {store_path}", err=True)
        if not quiet:
            click.echo(report.rstrip("\n"))
        return exit_code_for(diagnosis, fail_on)

    run_guarded(debug, body)


def _options_needing_one_record(store_path: Optional[str], try_fixes: bool, fixes_json: Optional[str]) -> list[str]:
    """The options given that work on a single record, each with the reason."""
    options = []
    if store_path is not None:
        options.append("--store (a run store holds one run)")
    if try_fixes or fixes_json:
        flag = "--fixes-json" if fixes_json and not try_fixes else "--try-fixes"
        options.append(f"{flag} (a fix trial retrains the model and compares one record with the base run's)")
    return options


def _refuse_several(names: list[str], one_record: list[str], file_name: str) -> None:
    """Before training: several networks cannot go where one record is expected."""
    if len(names) > 1 and one_record:
        raise ConfigError(
            f"{file_name} trains {len(names)} networks ({', '.join(names)}), each with its own optimizer, and gradscope "
            f"records each on its own, but {' and '.join(one_record)} {'works' if len(one_record) == 1 else 'work'} "
            "on a single record. Run without it: the printed report, --json and --html show every network under its "
            "own heading."
        )


def _report_trial(done: int, total: int, trial) -> None:
    """One line per finished fix trial on stderr (they take a training run each)."""
    if trial is None:
        if total:
            click.echo(f"Trying {total} fix(es) on fresh copies of the model ...", err=True)
        return
    took = f" in {trial.seconds:.1f}s" if trial.seconds else ""
    click.echo(f"  [{done}/{total}] {trial.finding} / {trial.fix}: {trial.verdict}{took}", err=True)


@contextlib.contextmanager
def _progress(steps: int, enabled: bool):
    if not enabled:
        yield None
        return
    with click.progressbar(length=steps, label="Training", file=click.get_text_stream("stderr")) as bar:
        yield bar.update
