"""The files `--fixes-json FIXES.json` writes: the trials, and every run they compare, for `gradscope compare`.

FIXES.json holds the trials (verdicts, metrics, the code); next to it FIXES.base.json is the
base run and FIXES.<finding>.<fix>.json each trial's run, so that
`gradscope compare FIXES.base.json FIXES.vanishing-gradients.batchnorm.json` shows a trial
layer by layer against the run it fixes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..diagnose.finding import Diagnosis
from ..io import RenderedFile, json_text, to_json_value
from ..outputs import record_json
from ..record import RunRecord
from .trial import FixTrial


def record_path(path: Path, trial: FixTrial) -> Path:
    return path.with_name(f"{path.stem}.{trial.finding}.{trial.fix}.json")


def base_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}.base.json")


def render_trial_files(path: Path, trials: Sequence[FixTrial], base: RunRecord, diagnosis: Diagnosis) -> list[RenderedFile]:
    """All the files, as bytes in memory: written later in one all-or-nothing batch."""
    files = [RenderedFile(base_path(path), record_json(base, diagnosis).encode("utf-8"), "JSON run record")]
    entries = []
    for trial in trials:
        entry = trial.to_dict()
        if trial.record is not None:
            target = record_path(path, trial)
            files.append(RenderedFile(target, record_json(trial.record).encode("utf-8"), "JSON run record"))
            entry["record"] = target.name
        entries.append(entry)
    document = {"base": base_path(path).name, "trials": entries}
    files.insert(0, RenderedFile(path, json_text(to_json_value(document)).encode("utf-8"), "fix trials JSON"))
    return files
