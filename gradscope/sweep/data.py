"""The data a sweep trains on: the bundled synthetic task, or the user's own .npz file.

The bundled task ("teacher task") is generated in code, the same on every machine:

* inputs: 16 features, standard normal, drawn with numpy's PCG64 generator from the fixed
  seed 20110 (independent of the sweep's --seed, so every sweep sees the same data);
* labels: 4 classes, the argmax of a fixed random two-layer tanh "teacher" network
  (16 -> 32 -> 4) applied to the inputs, so the boundary is smooth but nonlinear and a
  linear model cannot fit it all;
* 10% of the training labels are replaced by random classes (label noise), which gives a
  network something to overfit and dropout something to prevent;
* 512 training and 512 validation samples by default (validation labels are clean).

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

from ..errors import DataFileError

BUNDLED_SEED = 20110
BUNDLED_FEATURES = 16
BUNDLED_CLASSES = 4
VALIDATION_FRACTION = 0.2


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

    @property
    def chance_loss(self) -> float:
        """Cross-entropy of always predicting the training set's class frequencies: where a network
        that learned nothing from its inputs ends (not the first loss, which the init decides)."""
        frequencies = np.bincount(self.y, minlength=self.num_classes) / len(self.y)
        frequencies = frequencies[frequencies > 0]
        return float(-(frequencies * np.log(frequencies)).sum())


def bundled_task(n_train: int = 512, n_val: int = 512, label_noise: float = 0.1) -> SweepData:
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


def load_npz(path: str | os.PathLike[str]) -> SweepData:
    """Read a user's data set for a sweep; every problem becomes a DataFileError that says the fix."""
    path = Path(path)
    shown = str(path)
    if not path.is_file():
        raise DataFileError(
            f"Data file {shown!r} does not exist. Pass an .npz file written with numpy.savez(path, X=..., y=...) "
            "(optionally also X_val=..., y_val=...), or leave `data` out to use the bundled task."
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DataFileError(
            f"Data file {shown!r} is not a readable .npz archive ({type(exc).__name__}: {exc}). Write it with "
            "numpy.savez(path, X=features, y=labels); object arrays (pickles) are not accepted."
        ) from None
    missing = [name for name in ("X", "y") if name not in arrays]
    if missing:
        raise DataFileError(
            f"Data file {shown!r} has no array named {' or '.join(missing)} (it holds: "
            f"{', '.join(sorted(arrays)) or 'nothing'}). Save the inputs as X (samples x features) and the class "
            "labels as y (one integer per sample): numpy.savez(path, X=..., y=...)."
        )
    has_val = [name for name in ("X_val", "y_val") if name in arrays]
    if len(has_val) == 1:
        other = "y_val" if has_val[0] == "X_val" else "X_val"
        raise DataFileError(
            f"Data file {shown!r} has {has_val[0]} but no {other}. Give both validation arrays, or neither "
            f"(then the last {VALIDATION_FRACTION:.0%} of a fixed shuffle of X, y is held out for validation)."
        )
    X = _features(arrays["X"], "X", shown)
    y = _labels(arrays["y"], "y", len(X), shown)
    if has_val:
        X_val = _features(arrays["X_val"], "X_val", shown)
        y_val = _labels(arrays["y_val"], "y_val", len(X_val), shown)
        if X_val.shape[1] != X.shape[1]:
            raise DataFileError(
                f"In data file {shown!r}, X has {X.shape[1]} features per sample but X_val has {X_val.shape[1]}. "
                "Training and validation inputs must have the same features."
            )
        how = "its own validation arrays"
    else:
        if len(X) < 2:
            raise DataFileError(
                f"Data file {shown!r} has only {len(X)} sample, too few to hold some out for validation. "
                "Add samples or give X_val and y_val."
            )
        order = np.random.Generator(np.random.PCG64(BUNDLED_SEED)).permutation(len(X))
        n_val = max(1, int(round(len(X) * VALIDATION_FRACTION)))
        train, val = order[:-n_val], order[-n_val:]
        X, y, X_val, y_val = X[train], y[train], X[val], y[val]
        how = f"{len(val)} samples held out for validation"
    num_classes = int(max(y.max(), y_val.max())) + 1
    if num_classes < 2:
        raise DataFileError(
            f"Data file {shown!r} has only one class (every label is 0). A classification sweep needs labels "
            "0..C-1 with at least two classes."
        )
    return SweepData(
        X=X, y=y, X_val=X_val, y_val=y_val, num_classes=num_classes,
        description=f"{path.name}: {X.shape[1]} features, {num_classes} classes, {len(X)} train / "
        f"{len(X_val)} validation samples ({how})",
    )


def _features(array: np.ndarray, name: str, shown: str) -> np.ndarray:
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise DataFileError(
            f"In data file {shown!r}, {name} has shape {array.shape}; it must be 2-D, samples x features, with at "
            "least one of each. Flatten images first, e.g. X.reshape(len(X), -1)."
        )
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or np.iscomplexobj(array):
        raise DataFileError(f"In data file {shown!r}, {name} holds {array.dtype} values; it must hold real numbers.")
    features = array.astype(np.float32)
    if not np.isfinite(features).all():
        raise DataFileError(
            f"In data file {shown!r}, {name} contains NaN or infinite values (or values too large for float32). "
            "Remove or impute them before the sweep."
        )
    return features


def _labels(array: np.ndarray, name: str, samples: int, shown: str) -> np.ndarray:
    if array.ndim != 1:
        raise DataFileError(
            f"In data file {shown!r}, {name} has shape {array.shape}; it must be 1-D, one integer class label per "
            f"sample. For one-hot labels save {name}.argmax(axis=1)."
        )
    if len(array) != samples:
        inputs = "X" if name == "y" else "X_val"
        raise DataFileError(
            f"In data file {shown!r}, {name} has {len(array)} labels but {inputs} has {samples} samples; "
            "they must match one to one."
        )
    numeric = np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    if not numeric or (np.issubdtype(array.dtype, np.floating) and not np.all(np.mod(array, 1) == 0)):
        raise DataFileError(
            f"In data file {shown!r}, {name} holds {array.dtype} values that are not all whole numbers; class "
            "labels must be integers 0..C-1 (map string labels with numpy.unique(labels, return_inverse=True))."
        )
    if array.min() < 0:
        raise DataFileError(
            f"In data file {shown!r}, {name} has negative labels (smallest {array.min()}); class labels must be "
            "integers 0..C-1."
        )
    return array.astype(np.int64)
