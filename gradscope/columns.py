"""A column of per-step values: numpy arrays with a "measured" mask instead of a list of floats.

A long run records thousands of values per step; as Python floats in lists they cost ~40
bytes each. A `Column` keeps 4 (float32) or 8 (float64) bytes plus a mask byte, behaves like
the list it replaces, and keeps None (not measured), NaN and Inf apart. The record's columns
and the run store's packed rows share `measured_precision`, so a run read back from a store
equals the run kept in memory.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

Value = Optional[float]

# Rows of values appended before they are packed into a column's arrays: packing per value
# would cost a numpy call on the training thread for every statistic of every step.
_PACK_EVERY = 256
_FLOAT32_TINY = float(np.finfo(np.float32).tiny)


def measured_precision(values: np.ndarray) -> np.ndarray:
    """`values` (float64) as gradscope keeps a measured statistic: rounded to float32, the
    precision the device reduced it in, unless float32 would change what it says (an overflow
    to Inf, an underflow to 0 or to a subnormal), where the float64 value is kept as it is."""
    with np.errstate(over="ignore", invalid="ignore"):
        rounded = values.astype(np.float32)
        # Only zeros, subnormals, NaN and Inf after rounding can be unfaithful: look closer at those.
        suspect = np.flatnonzero(~(np.abs(rounded) >= _FLOAT32_TINY) | np.isinf(rounded))
        kept = rounded.astype(np.float64)
        if len(suspect):
            exact = values[suspect]
            faithful = ~np.isfinite(exact) | (exact == 0) | ((np.abs(exact) >= _FLOAT32_TINY) & np.isfinite(rounded[suspect]))
            kept[suspect[~faithful]] = exact[~faithful]
    return kept


def fits_float32(values: np.ndarray) -> bool:
    """True when every value of a float64 array survives a round trip through float32 exactly."""
    with np.errstate(invalid="ignore", over="ignore"):
        back = values.astype(np.float32).astype(np.float64)
    return bool(np.all((back == values) | np.isnan(values)))


class Column:
    """One series: a value per recorded step, `None` where nothing was measured.

    Behaves like a list of floats and Nones (indexing, iteration, `len`, `==` with a list),
    but holds a float32 array (float64 when a value needs it) and a boolean mask: about
    5 bytes a value. NaN, Inf and None stay distinct. Values are kept exactly, except those
    added by `append_measured`: statistics a watch measured, kept at float32 precision
    (`measured_precision`), which is what lets the run store hold them in 4 bytes.
    """

    __slots__ = ("_values", "_measured", "_size", "_pending", "_pending_measured")

    def __init__(self, values: Iterable[Value] = ()) -> None:
        numbers, measured = _to_arrays(list(values))
        self._values = numbers if not fits_float32(numbers) else numbers.astype(np.float32)
        self._measured = measured
        self._size = len(measured)
        self._pending: list[Value] = []
        self._pending_measured = False

    @classmethod
    def from_arrays(cls, values: np.ndarray, measured: np.ndarray) -> "Column":
        """A column over existing arrays (not copied); `values` may be float32 or float64."""
        column = cls.__new__(cls)
        column._values = values
        column._measured = measured
        column._size = len(measured)
        column._pending = []
        column._pending_measured = False
        return column

    @classmethod
    def unmeasured(cls, length: int) -> "Column":
        return cls.from_arrays(np.full(length, np.nan, np.float32), np.zeros(length, bool))

    # ---- adding ------------------------------------------------------------------------------
    def append(self, value: Value) -> None:
        """Add the value of the next recorded step, exactly."""
        if self._pending_measured:
            self._pack()
        self._pending.append(value)
        if len(self._pending) >= _PACK_EVERY:
            self._pack()

    def append_measured(self, value: Value) -> None:
        """Add a measured statistic of the next recorded step, at float32 precision."""
        if self._pending and not self._pending_measured:
            self._pack()
        self._pending_measured = True
        self._pending.append(value)
        if len(self._pending) >= _PACK_EVERY:
            self._pack()

    def _pack(self) -> None:
        pending, self._pending = self._pending, []
        rounded, self._pending_measured = self._pending_measured, False
        if not pending:
            return
        numbers, measured = _to_arrays(pending)
        if rounded:
            numbers = measured_precision(numbers)
        needed = self._size + len(pending)
        if needed > len(self._measured):
            capacity = max(needed, len(self._measured) * 3 // 2, 64)  # x1.5: at most 2.5 bytes a value unused
            self._values = _resized(self._values, capacity)
            self._measured = _resized(self._measured, capacity)
        if self._values.dtype == np.float32 and not fits_float32(numbers):
            self._values = self._values.astype(np.float64)
        self._values[self._size : needed] = numbers
        self._measured[self._size : needed] = measured
        self._size = needed

    # ---- reading -----------------------------------------------------------------------------
    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(values, measured) as views: float32 or float64 values, NaN where not measured."""
        self._pack()
        return self._values[: self._size], self._measured[: self._size]

    def tolist(self) -> list[Value]:
        values, measured = self.arrays()
        out = values.tolist()
        for index in np.flatnonzero(~measured).tolist():
            out[index] = None
        return out

    @property
    def nbytes(self) -> int:
        return self._values.nbytes + self._measured.nbytes

    def __len__(self) -> int:
        return self._size + len(self._pending)

    def __iter__(self) -> Iterator[Value]:
        return iter(self.tolist())

    def __getitem__(self, index: Union[int, slice]) -> Any:
        if isinstance(index, slice):
            return self.tolist()[index]
        values, measured = self.arrays()
        if index < 0:
            index += self._size
        if not 0 <= index < self._size:
            raise IndexError("column index out of range")
        return float(values[index]) if measured[index] else None

    def __setitem__(self, index: Union[int, slice], value: Any) -> None:
        if isinstance(index, slice):  # rare (tests, hand-made records): rebuild from a list
            values = self.tolist()
            values[index] = value
            rebuilt = Column(values)
            self._values, self._measured, self._size = rebuilt._values, rebuilt._measured, rebuilt._size
            return
        values, measured = self.arrays()
        if index < 0:
            index += self._size
        if not 0 <= index < self._size:
            raise IndexError("column index out of range")
        if value is not None and values.dtype == np.float32 and not fits_float32(np.array([value], np.float64)):
            self._values = self._values.astype(np.float64)
        self._values[index] = np.nan if value is None else value
        self._measured[index] = value is not None

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Column, list, tuple)):
            return self.tolist() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like a list

    def __repr__(self) -> str:
        return f"Column({self.tolist()!r})"


def column_arrays(values: Union[Column, Sequence[Value]]) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values with NaN where not measured, measured mask) of a column or a plain list."""
    if isinstance(values, Column):
        numbers, measured = values.arrays()
        return numbers.astype(np.float64, copy=False), measured
    return _to_arrays(list(values))


def _to_arrays(values: list[Value]) -> tuple[np.ndarray, np.ndarray]:
    measured = np.fromiter((v is not None for v in values), bool, len(values))
    numbers = np.fromiter((np.nan if v is None else v for v in values), np.float64, len(values))
    return numbers, measured


def _resized(array: np.ndarray, capacity: int) -> np.ndarray:
    grown = np.full(capacity, np.nan, array.dtype) if array.dtype != bool else np.zeros(capacity, bool)
    grown[: len(array)] = array
    return grown
