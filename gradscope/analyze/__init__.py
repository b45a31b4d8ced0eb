"""The model-file path: what `gradscope analyze model.py` does, as library calls.

`modelfile.py` loads and checks the file's contract, `batches.py` makes batches and synthetic
inputs from it, `training.py` runs the watched training loop and returns a RunRecord.
"""

from __future__ import annotations

from .training import DEFAULT_LR, OPTIMIZERS, AnalyzeConfig, analyze_file

__all__ = ["DEFAULT_LR", "OPTIMIZERS", "AnalyzeConfig", "analyze_file"]
