"""Verified fixes: try each recommendation on a fresh copy of the model and measure what it changed.

    trials = gradscope.try_fixes(build_model, make_batch, steps=50, seed=0)
    for trial in trials:
        print(trial.finding, trial.fix, trial.verdict, trial.before, trial.after)

The base run (the "before") is the plain `gradscope analyze` training of the model; each trial
rebuilds the model with the same seed, applies one fix, and trains with the same batches,
optimizer settings and number of steps, then is diagnosed and compared with the base run on the
finding's own evidence. One module per finding holds its fixes and metrics; `plan.py` is how a
fix is both shown and applied from one piece of source; `runner.py` runs the trials.
"""

from __future__ import annotations

import time
import types
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..analyze import AnalyzeConfig, seed_everything, train_model_file
from ..analyze.modelfile import ModelFile
from ..diagnose import diagnose
from ..diagnose.config import ConfigSource, resolve_config
from ..diagnose.finding import Diagnosis
from ..errors import ConfigError
from ..record import RunRecord
from .catalog import CATALOG, FIX_IDS
from .plan import FixPlan, NotApplicable
from .runner import Progress, check_fix_ids, run_fix_trials
from .trial import VERDICTS, FixTrial

__all__ = ["CATALOG", "FIX_IDS", "VERDICTS", "FixPlan", "FixTrial", "NotApplicable", "run_fix_trials", "try_fixes"]


def try_fixes(
    build_model: Callable[[], Any],
    make_batch: Optional[Callable[[int], Any]] = None,
    train_data: Optional[Callable[[], Any]] = None,
    val_data: Optional[Callable[[], Any]] = None,
    loss_fn: Optional[Callable[[Any, Any], Any]] = None,
    make_optimizer: Optional[Callable[[Any], Any]] = None,
    *,
    steps: int = 50,
    seed: int = 0,
    diagnosis: Optional[Diagnosis] = None,
    fixes: Optional[Sequence[str]] = None,
    base: Optional[RunRecord] = None,
    config: ConfigSource = None,
    batch_size: int = 32,
    device: str = "cpu",
    progress: Optional[Progress] = None,
) -> list[FixTrial]:
    """Train the model as `gradscope analyze` would (the base run), then try each fix for its findings.

    The arguments are the model-file contract as functions. `base` reuses a base run already
    trained with these settings (its `diagnosis` too, if given); `fixes` limits the trials to
    these fix ids (`gradscope.fixes.FIX_IDS`); `config` holds the diagnosis thresholds and the
    `fixes:` section. A model without warnings or errors gets no trials.
    """
    if not callable(build_model):
        raise ConfigError(f"build_model must be a function returning the model, not {type(build_model).__name__}.")
    check_fix_ids(fixes)
    thresholds = resolve_config(config)
    analyze_config = AnalyzeConfig(steps=steps, seed=seed, batch_size=batch_size, device=device)
    analyze_config.validate()
    model_file = ModelFile(
        path=_defined_in(build_model),
        namespace=types.ModuleType("gradscope_try_fixes"),
        build_model=build_model,
        make_batch=make_batch,
        train_data=train_data,
        val_data=val_data,
        loss_fn=loss_fn,
        make_optimizer=make_optimizer,
    )
    if make_batch is not None and train_data is not None:
        raise ConfigError("Pass make_batch or train_data, not both: the trials would not know which data to train on.")
    base_seconds = None
    if base is None:
        started = time.perf_counter()
        seed_everything(seed)
        base = train_model_file(model_file, analyze_config)
        base_seconds = time.perf_counter() - started
    if diagnosis is None:
        diagnosis = diagnose(base, thresholds)
    return run_fix_trials(
        model_file, analyze_config, base, diagnosis, thresholds, only=fixes, base_seconds=base_seconds, progress=progress
    )


def _defined_in(function: Callable[..., Any]) -> Path:
    """The file that defines `function`, so error messages can point into it."""
    code = getattr(function, "__code__", None)
    return Path(code.co_filename) if code is not None else Path("<build_model>")
