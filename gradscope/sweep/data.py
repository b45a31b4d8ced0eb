"""The data a sweep trains on: the bundled synthetic task, or the user's own .npz file.

The bundled task ("teacher task") is generated in code, the same on every machine:

* inputs: 16 features, standard normal, drawn with numpy's PCG64 generator from the fixed
  seed 20110 (independent of the sweep's --seed, so every sweep sees the same data);
* labels: 4 classes, the argmax of a fixed random two-layer tanh "teacher" network
  (16 -> 32 -> 4) applied to the inputs, so the boundary is smooth but nonlinear and a
  linear model cannot fit it all;
* 10% of the training labels are replaced by random classes (label noise), which gives a
  network something to overfit and dropout something to prevent;
* 1024 training and 1024 validation samples by default (validation labels are clean).

A shallow network of any activation learns much of it in 100 full-batch steps; a deep
sigmoid network does not move, because its first layers receive almost no gradient. That
contrast is what the sweep is for.

`--data FILE.npz` replaces it: arrays `X` (n, features) and `y` (n,) of integer class labels
0..C-1, optionally `X_val` and `y_val`; without them the last 20% of a fixed shuffle of the
file's samples become the validation set.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import GradscopeError

BUNDLED_SEED = 20110
BUNDLED_FEATURES = 16
BUNDLED_CLASSES = 4
VALIDATION_FRACTION = 0.2


class DataFileError(GradscopeError, ValueError):
    """A --data file is missing, unreadable, lacks arrays, or holds arrays of the wrong shape."""


@dataclass
class SweepData:
    """Training and validation arrays (float32 inputs, int64 labels) and where they came from."""

    X: np.ndarray
    y: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    num_classes: int
    description: str

    @property
    def num_features(self) -> int:
        return int(self.X.shape[1])


def bundled_task(n_train: int = 1024, n_val: int = 1024, label_noise: float = 0.1) -> SweepData:
    """The deterministic synthetic teacher task described in this module's docstring."""
    rng = np.random.Generator(np.random.PCG64(BUNDLED_SEED))
    teacher_hidden = rng.normal(0.0, 1.0 / np.sqrt(BUNDLED_FEATURES), size=(BUNDLED_FEATURES, 32)) * 2.0
    teacher_out = rng.normal(0.0, 1.0 / np.sqrt(32), size=(32, BUNDLED_CLASSES))

    def teacher(x: np.ndarray) -> np.ndarray:
        return np.argmax(np.tanh(x @ teacher_hidden) @ teacher_out, axis=1)

    # Draw the two splits from separate streams so n_train does not change the validation set.
    train_rng, val_rng, noise_rng = rng.spawn(3)
    X = train_rng.standard_normal((n_train, BUNDLED_FEATURES))
    X_val = val_rng.standard_normal((n_val, BUNDLED_FEATURES))
    y = teacher(X)
    flip = noise_rng.random(n_train) < label_noise
    y[flip] = noise_rng.integers(0, BUNDLED_CLASSES, size=int(flip.sum()))
    return SweepData(
        X=X.astype(np.float32),
        y=y.astype(np.int64),
        X_val=X_val.astype(np.float32),
        y_val=teacher(X_val).astype(np.int64),
        num_classes=BUNDLED_CLASSES,
        description=(
            f"bundled teacher task: {BUNDLED_FEATURES} Gaussian features, {BUNDLED_CLASSES} classes from a fixed "
            f"random tanh teacher, {n_train} train ({label_noise:.0%} label noise) / {n_val} validation samples"
        ),
    )
