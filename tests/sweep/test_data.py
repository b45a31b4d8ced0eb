"""The bundled task is deterministic and learnable; --data files are read or rejected clearly."""

from __future__ import annotations

import numpy as np
import pytest

from gradscope.errors import GradscopeError
from gradscope.sweep import DataFileError, bundled_task, load_npz


def test_bundled_task_is_the_same_every_time_and_balanced_enough():
    first, second = bundled_task(), bundled_task()
    for name in ("X", "y", "X_val", "y_val"):
        assert np.array_equal(getattr(first, name), getattr(second, name))
    assert first.X.shape == (512, 16) and first.X.dtype == np.float32
    assert first.y.dtype == np.int64 and first.num_classes == 4
    counts = np.bincount(first.y_val, minlength=4) / len(first.y_val)
    assert counts.min() > 0.1  # every class present: chance accuracy is well below what a net can reach
    assert "teacher" in first.description


def test_training_set_size_does_not_change_the_validation_set():
    small, default = bundled_task(n_train=64), bundled_task()
    assert np.array_equal(small.X_val, default.X_val) and np.array_equal(small.y_val, default.y_val)
    assert small.X.shape == (64, 16)


def test_bundled_labels_are_a_nonlinear_function_of_the_inputs_with_some_noise():
    data = bundled_task(n_train=2048, label_noise=0.0)
    # A least-squares linear classifier (one-hot targets) cannot fit the teacher's boundary.
    X = np.hstack([data.X, np.ones((len(data.X), 1))])
    weights, *_ = np.linalg.lstsq(X, np.eye(4)[data.y], rcond=None)
    linear_accuracy = (np.argmax(X @ weights, axis=1) == data.y).mean()
    assert 0.4 < linear_accuracy < 0.9
    noisy = bundled_task(n_train=2048, label_noise=0.1)
    assert 0.05 < (noisy.y != data.y).mean() < 0.1  # 10% replaced by a random class, 3/4 of them changed


def _save(tmp_path, name="data.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_load_npz_with_validation_arrays(tmp_path):
    rng = np.random.default_rng(0)
    path = _save(tmp_path, X=rng.normal(size=(30, 3)), y=np.arange(30) % 3, X_val=rng.normal(size=(10, 3)),
                 y_val=np.arange(10) % 3)
    data = load_npz(path)
    assert data.X.shape == (30, 3) and data.X.dtype == np.float32 and data.y.dtype == np.int64
    assert data.X_val.shape == (10, 3) and data.num_classes == 3
    assert "own validation arrays" in data.description


def test_load_npz_without_validation_holds_out_a_fixed_fifth(tmp_path):
    X = np.arange(100, dtype=float).reshape(50, 2)
    path = _save(tmp_path, X=X, y=(np.arange(50) % 2).astype(float))  # float labels that are whole numbers
    data = load_npz(path)
    assert len(data.X) == 40 and len(data.X_val) == 10
    assert sorted(np.concatenate([data.X[:, 0], data.X_val[:, 0]]).tolist()) == X[:, 0].tolist()
    assert np.array_equal(load_npz(path).X_val, data.X_val)


BAD_FILES = [
    (dict(X=np.zeros((4, 2))), "no array named y"),
    (dict(y=np.zeros(4)), "no array named X"),
    (dict(X=np.zeros(4), y=np.zeros(4)), "must be 2-D"),
    (dict(X=np.zeros((4, 2)), y=np.zeros((4, 1))), "must be 1-D"),
    (dict(X=np.zeros((4, 2)), y=np.zeros(3)), "3 labels but X has 4 samples"),
    (dict(X=np.zeros((4, 2)), y=np.array([0, 1, 0.5, 1])), "not all whole numbers"),
    (dict(X=np.zeros((4, 2)), y=np.array([0, 1, -1, 1])), "negative labels"),
    (dict(X=np.full((4, 2), np.nan), y=np.array([0, 1, 0, 1])), "NaN or infinite"),
    (dict(X=np.zeros((4, 2)), y=np.zeros(4)), "only one class"),
    (dict(X=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]), X_val=np.zeros((2, 2))), "has X_val but no y_val"),
    (dict(X=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]), X_val=np.zeros((2, 3)), y_val=np.array([0, 1])),
     "X has 2 features per sample but X_val has 3"),
    (dict(X=np.zeros((1, 2)), y=np.array([1])), "too few"),
]


@pytest.mark.parametrize("arrays,phrase", BAD_FILES)
def test_bad_arrays_are_rejected_with_a_clear_message(tmp_path, arrays, phrase):
    path = _save(tmp_path, **arrays)
    with pytest.raises(DataFileError) as caught:
        load_npz(path)
    assert phrase in str(caught.value)
    assert isinstance(caught.value, GradscopeError)
    assert "\n" not in str(caught.value)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(DataFileError, match="does not exist"):
        load_npz(tmp_path / "nope.npz")
    not_npz = tmp_path / "text.npz"
    not_npz.write_text("hello")
    with pytest.raises(DataFileError, match="not a readable .npz"):
        load_npz(not_npz)
    pickled = tmp_path / "objects.npz"
    np.savez(pickled, X=np.array([{"a": 1}], dtype=object), y=np.array([0]))
    with pytest.raises(DataFileError, match="not a readable .npz"):
        load_npz(pickled)
