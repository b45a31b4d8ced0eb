"""The model-file path: what `gradscope analyze model.py` does, as library calls.

`modelfile.py` loads and checks the file's contract, `batches.py` makes batches and synthetic
inputs from it, `training.py` runs the watched training loop and returns a RunRecord (one per
network when several optimizers train several networks, which `networks.py` tells apart);
`TrainingChanges` lets a variant of that run (a fix trial) change the model, the optimizer or
the step, and nothing else.
"""

from __future__ import annotations

from .training import (
    DEFAULT_LR,
    OPTIMIZERS,
    AnalyzeConfig,
    TrainingChanges,
    analyze_file,
    analyze_networks,
    seed_everything,
    train_model_file,
    train_networks,
)

__all__ = [
    "DEFAULT_LR",
    "OPTIMIZERS",
    "AnalyzeConfig",
    "TrainingChanges",
    "analyze_file",
    "analyze_networks",
    "seed_everything",
    "train_model_file",
    "train_networks",
]
