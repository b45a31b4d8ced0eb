"""The run store: one SQLite file a watch streams its recorded steps into.

Why SQLite (Python's built-in `sqlite3`, WAL journal): a transaction is all or nothing, so a
killed process never leaves a torn store; readers open the file while training writes to it
and see every committed step; it is one file; any language can read it.

Layout (`STORE_SCHEMA_VERSION`):
- `info(key, value)`: `format`, `schema_version`, `meta` (RunMeta as JSON), `hook_errors` (JSON).
- `modules`: the module tree in forward order, one row per module.
- `names(id, kind, name)`: every layer and parameter, in order of first appearance.
- `series(col, kind, name, stat)`: the catalog, "layer or parameter x statistic -> column".
- `steps(seq, step, width, value_blob, measured_blob, wide_blob)`: one row per recorded step.
  `value_blob` holds `width` little-endian float32 values, one per catalog column;
  `measured_blob` the bits (little-endian bit order) of the columns that were measured
  (unset: None); `wide_blob`, when not NULL, int32 columns followed by their float64 values
  for the few values float32 would change (see `record.measured_precision`). Columns added
  to the catalog after a row was written read as None in that row.
- `skipped_steps(seq, step)`; `step_intervals(seq, step, interval)` (budget=: the recording
  interval in force at each recorded step; a store written before it existed lacks the table,
  and reads as having none), `scalar_names(id, name)`, `scalars(name_id, seq, step, value)`
  (`value` NULL: NaN).

Writing happens off the training thread: `StoreWriter.append_step` packs a row (the only
per-step work on the training thread) and queues it; a writer thread commits what is queued
every `COMMIT_INTERVAL` seconds, so a recorded step is on disk within about a second and a
crash loses at most that. The writer holds an advisory lock on the file: a second writer on
the same path is refused before training starts.
"""

from __future__ import annotations

import collections
import json
import math
import os
import sqlite3
import threading
import time
import warnings
import weakref
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from .columns import Column, Value, column_arrays, measured_precision
from .errors import RecordFormatError, StoreError
from .io import json_text, to_json_value
from .runinfo import HookError, ModuleInfo, RunMeta

try:  # advisory file locks; where they do not exist, two writers are not detected
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

STORE_SCHEMA_VERSION = 1
STORE_FORMAT = "gradscope-run-store"
STORE_SUFFIX = ".gsrun"
COMMIT_INTERVAL = 0.5  # seconds between commits of the writer thread
HEADER_INTERVAL = 1.0  # seconds between refreshes of the module tree and hook errors while training
SQLITE_MAGIC = b"SQLite format 3\x00"
_APPLICATION_ID = 0x67737275  # "gsru", in the SQLite header: marks the file as a gradscope store
_READ_BLOCK = 2048  # step rows read at a time
_WAKE_AT = 256  # queued statements that wake the writer thread before its interval is up
# Queued statements past which the training thread writes them itself: the writer thread is behind
# (a WAL checkpoint, a slow disk) and an unbounded queue would grow resident memory with the run.
_MAX_QUEUED = 1024

_SCHEMA = """
CREATE TABLE info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE modules (
    position INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL, num_params INTEGER NOT NULL,
    params TEXT NOT NULL, trainable_params INTEGER NOT NULL, activation TEXT, is_leaf INTEGER NOT NULL,
    executed INTEGER NOT NULL
);
CREATE TABLE names (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, UNIQUE (kind, name));
CREATE TABLE series (
    col INTEGER PRIMARY KEY, kind TEXT NOT NULL CHECK (kind IN ('layer', 'param')), name TEXT NOT NULL,
    stat TEXT NOT NULL, UNIQUE (kind, name, stat)
);
CREATE TABLE steps (
    seq INTEGER PRIMARY KEY, step INTEGER NOT NULL, width INTEGER NOT NULL, value_blob BLOB NOT NULL,
    measured_blob BLOB NOT NULL, wide_blob BLOB
);
CREATE TABLE skipped_steps (seq INTEGER PRIMARY KEY, step INTEGER NOT NULL);
CREATE TABLE step_intervals (seq INTEGER PRIMARY KEY, step INTEGER NOT NULL, interval INTEGER NOT NULL);
CREATE TABLE scalar_names (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE scalars (
    name_id INTEGER NOT NULL, seq INTEGER NOT NULL, step INTEGER NOT NULL, value REAL, PRIMARY KEY (name_id, seq)
) WITHOUT ROWID;
"""
_TABLES = ("info", "modules", "names", "series", "steps", "skipped_steps", "scalar_names", "scalars")
_OPTIONAL_TABLES = ("step_intervals",)  # added later within store schema 1: older stores lack them


def is_store_file(path: Path) -> bool:
    """True when the file starts like an SQLite database (a run store, or a foreign one)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


# ---- packing one step -------------------------------------------------------------------------
def pack_row(values: np.ndarray, measured: np.ndarray) -> tuple[bytes, bytes, Optional[bytes]]:
    """(value_blob, measured_blob, wide_blob) of one step; `values` float64, NaN where not measured."""
    with np.errstate(over="ignore"):
        narrow = values.astype("<f4")
    with np.errstate(invalid="ignore"):
        wide = measured & (narrow.astype(np.float64) != values) & ~np.isnan(values)
    wide_blob = None
    if wide.any():
        columns = np.flatnonzero(wide)
        wide_blob = columns.astype("<i4").tobytes() + values[columns].astype("<f8").tobytes()
    return narrow.tobytes(), np.packbits(measured, bitorder="little").tobytes(), wide_blob


def unpack_row(width: int, value_blob: bytes, measured_blob: bytes, wide_blob: Optional[bytes]) -> tuple[np.ndarray, np.ndarray, Optional[tuple[np.ndarray, np.ndarray]]]:
    if len(value_blob) != 4 * width or len(measured_blob) != (width + 7) // 8:
        raise ValueError(f"a step row of {width} columns holds {len(value_blob)} value bytes and {len(measured_blob)} mask bytes")
    values = np.frombuffer(value_blob, "<f4")
    measured = np.unpackbits(np.frombuffer(measured_blob, np.uint8), count=width, bitorder="little").astype(bool)
    wide = None
    if wide_blob is not None:
        if len(wide_blob) % 12:
            raise ValueError(f"a step row's float64 section holds {len(wide_blob)} bytes, not a multiple of 12")
        count = len(wide_blob) // 12
        columns = np.frombuffer(wide_blob, "<i4", count)
        if count and (columns.min() < 0 or columns.max() >= width):
            raise ValueError("a step row's float64 section names a column outside the row")
        wide = (columns, np.frombuffer(wide_blob, "<f8", count, offset=4 * count))
    return values, measured, wide


class _Catalog:
    """Series -> column, in order of first appearance (which is also the record's dict order)."""

    def __init__(self) -> None:
        self.columns: dict[str, dict[str, dict[str, int]]] = {"layer": {}, "param": {}}
        self.width = 0

    def add(self, kind: str, name: str, stat: str) -> int:
        col = self.width
        self.columns[kind][name][stat] = col
        self.width += 1
        return col


# ---- writing ----------------------------------------------------------------------------------
class StoreWriter:
    """Streams one run into a store; used by `watch(..., path=)` in place of an in-memory record.

    It takes what the Watcher hands a `RunRecord` (`append_step`, `log_scalar`, `modules`,
    `hook_errors`, `meta`) but keeps only O(layers) state: the steps go to disk. `refresh`,
    when given, is called on the training thread at most once every `HEADER_INTERVAL` seconds
    to bring `modules` and `hook_errors` up to date, so that a killed run's store has them.
    """

    def __init__(self, path: str | os.PathLike[str], meta: RunMeta, refresh: Optional[Callable[[], None]] = None) -> None:
        self.path = Path(path)
        self.meta = meta
        self.modules: list[ModuleInfo] = []
        self.hook_errors: list[HookError] = []
        self.skipped_steps: list[int] = []  # steps GradScaler skipped: few, kept for the Watcher's notes
        self._refresh = refresh
        self._catalog = _Catalog()
        self._seq = 0
        self._scalar_ids: dict[str, int] = {}
        self._last_scalar: dict[int, tuple[int, int]] = {}  # name id -> (seq, step) of its last value
        self._scalar_seq = 0
        self._header_json = ""
        self._header_due = 0.0
        self._lock_fd, self._connection = _open_for_writing(self.path)
        self._queue: collections.deque[tuple[str, tuple]] = collections.deque()
        self._state = _WriterThread(self._connection, self._lock_fd, self._queue, self.path)
        self._closed = False
        self._queue_header()
        self._finalizer = weakref.finalize(self, self._state.close)

    # ---- what the Watcher calls ------------------------------------------------------------------
    def append_step(
        self,
        step: int,
        layer_values: dict[str, dict[str, Value]],
        param_values: dict[str, dict[str, Value]],
        skipped: bool = False,
        *,
        measured: bool = False,
        interval: Optional[int] = None,
    ) -> None:
        """As `RunRecord.append_step`: the step's row is packed here and committed by the writer thread."""
        columns: list[int] = []
        numbers: list[float] = []
        for kind, values in (("layer", layer_values), ("param", param_values)):
            known = self._catalog.columns[kind]
            for name, stats in values.items():
                cols = known.get(name)
                if cols is None:
                    cols = self._new_name(kind, name)
                for stat, value in stats.items():
                    col = cols.get(stat)
                    if col is None:
                        col = self._new_series(kind, name, stat)
                    if value is not None:
                        columns.append(col)
                        numbers.append(value)
        row = np.full(self._catalog.width, np.nan)
        row[columns] = numbers
        present = np.zeros(self._catalog.width, bool)
        present[columns] = True
        self.append_packed(step, row, present, skipped, measured=measured, interval=interval)

    def append_packed(
        self,
        step: int,
        values: np.ndarray,
        present: np.ndarray,
        skipped: bool = False,
        *,
        measured: bool = False,
        interval: Optional[int] = None,
    ) -> None:
        """Add a step whose values are already in catalog order: float64 `values` (NaN where not
        measured), `present` the mask of measured ones. `measured`, `interval` as in `append_step`."""
        if measured:
            values = measured_precision(values)
        value_blob, measured_blob, wide_blob = pack_row(values, present)
        self._put("INSERT INTO steps VALUES (?, ?, ?, ?, ?, ?)", (self._seq, step, len(values), value_blob, measured_blob, wide_blob))
        self._seq += 1
        if skipped:
            self.skipped_steps.append(step)
            self._put("INSERT INTO skipped_steps (step) VALUES (?)", (step,))
        if interval is not None:
            self._put("INSERT INTO step_intervals (step, interval) VALUES (?, ?)", (step, interval))
        self._maybe_refresh_header()

    def add_series(self, kind: str, name: str, stat: Optional[str]) -> Optional[int]:
        """Add a series to the catalog (for `append_packed`); returns its column. `stat=None`
        adds only the name (a layer or parameter that has no statistic yet)."""
        if name not in self._catalog.columns[kind]:
            self._new_name(kind, name)
        return None if stat is None else self._new_series(kind, name, stat)

    def log_scalar(self, step: int, name: str, value: float) -> None:
        name_id = self._scalar_ids.get(name)
        if name_id is None:
            name_id = self._scalar_ids[name] = len(self._scalar_ids)
            self._put("INSERT INTO scalar_names VALUES (?, ?)", (name_id, name))
        last = self._last_scalar.get(name_id)
        if last is not None and last[1] == step:
            seq = last[0]  # logged twice for one step (micro-batches): the last value wins, as in RunRecord
        else:
            seq = last[0] + 1 if last is not None else 0
        self._last_scalar[name_id] = (seq, step)
        stored = None if math.isnan(value) else float(value)  # SQLite has no NaN: NULL stands for it
        self._put("INSERT OR REPLACE INTO scalars VALUES (?, ?, ?, ?)", (name_id, seq, step, stored))

    def flush(self) -> None:
        """Commit everything queued now (the writer thread does this every COMMIT_INTERVAL)."""
        self._queue_header()
        self._state.flush()

    def close(self) -> None:
        """Write the last header, commit, and fold the journal into the one file."""
        if self._closed:
            return
        self._closed = True
        self._queue_header()
        self._finalizer()

    def read(self) -> dict[str, Any]:
        """Everything written so far, read back from the store, as RunRecord fields."""
        if not self._closed:
            self.flush()
        return read_store(self.path)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def failure(self) -> Optional[BaseException]:
        return self._state.failure

    # ---- internals ---------------------------------------------------------------------------------
    def _new_name(self, kind: str, name: str) -> dict[str, int]:
        cols = self._catalog.columns[kind][name] = {}
        self._put("INSERT INTO names (kind, name) VALUES (?, ?)", (kind, name))
        return cols

    def _new_series(self, kind: str, name: str, stat: str) -> int:
        col = self._catalog.add(kind, name, stat)
        self._put("INSERT INTO series VALUES (?, ?, ?, ?)", (col, kind, name, stat))
        return col

    def _put(self, sql: str, params: tuple) -> None:
        if self._state.failure is None:  # a failed writer keeps nothing: memory must stay flat
            self._queue.append((sql, params))
            if len(self._queue) >= _WAKE_AT:  # a fast loop: commit early, so the queue stays small
                self._state.wake.set()
                if len(self._queue) >= _MAX_QUEUED:
                    self._state.drain()

    def _maybe_refresh_header(self) -> None:
        now = time.monotonic()
        if now < self._header_due:
            return
        self._header_due = now + HEADER_INTERVAL
        if self._refresh is not None:
            self._refresh()
        self._queue_header()

    def _queue_header(self) -> None:
        modules = [asdict(m) for m in self.modules]
        header = {"meta": asdict(self.meta), "hook_errors": [asdict(e) for e in self.hook_errors], "modules": modules}
        text = json.dumps(header, sort_keys=True, default=str)
        if text == self._header_json:
            return
        self._header_json = text
        self._put("INSERT OR REPLACE INTO info VALUES ('meta', ?)", (_json(header["meta"]),))
        self._put("INSERT OR REPLACE INTO info VALUES ('hook_errors', ?)", (_json(header["hook_errors"]),))
        self._put("DELETE FROM modules", ())
        for position, m in enumerate(modules):
            self._put(
                "INSERT INTO modules VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (position, m["name"], m["type"], m["num_params"], json.dumps(m["params"]), m["trainable_params"],
                 m["activation"], int(m["is_leaf"]), int(m["executed"])),
            )


class _WriterThread:
    """Commits the queue every COMMIT_INTERVAL seconds. Kept apart from StoreWriter so the
    thread holds no reference to it (a forgotten writer is still closed when collected)."""

    def __init__(self, connection: sqlite3.Connection, lock_fd: Optional[int], queue: collections.deque, path: Path) -> None:
        self.connection = connection
        self.lock_fd = lock_fd
        self.queue = queue
        self.path = path
        self.failure: Optional[BaseException] = None
        self.pid = os.getpid()  # a forked child (a DataLoader worker) must never touch the connection
        self.wake = threading.Event()
        self.lock = threading.Lock()  # one drain at a time: the thread's, or a flush's
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name=f"gradscope-store:{path.name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping:
            self.wake.wait(COMMIT_INTERVAL)
            self.wake.clear()
            self.drain()

    def drain(self) -> None:
        with self.lock:
            if self.failure is not None or not self.queue or os.getpid() != self.pid:
                return
            try:
                with self.connection:  # one transaction: everything queued so far, or nothing
                    while self.queue:
                        sql, params = self.queue.popleft()
                        self.connection.execute(sql, params)
            except Exception as exc:  # noqa: BLE001 - a full disk must not stop the training
                self.failure = exc
                self.queue.clear()
                warnings.warn(
                    f"gradscope could not write the run store {str(self.path)!r} ({type(exc).__name__}: {exc}); "
                    "the steps recorded from here on are not saved. Check the free disk space and the file.",
                    RuntimeWarning,
                    stacklevel=1,
                )

    def flush(self) -> None:
        self.drain()

    def close(self) -> None:
        if os.getpid() != self.pid:
            return
        self.stopping = True
        self.wake.set()
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join()
        self.drain()
        try:
            # Fold the write-ahead log into the file, so a finished store is one plain file
            # (readable from read-only places). Another open reader makes this a no-op.
            self.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.connection.execute("PRAGMA journal_mode=DELETE")
        except sqlite3.Error:
            pass
        finally:
            self.connection.close()
            if self.lock_fd is not None:
                os.close(self.lock_fd)
                self.lock_fd = None


def _json(value: Any) -> str:
    return json_text(to_json_value(value), compact=True)  # as in a JSON record: NaN/Inf as strings


def check_store_path(path: str | os.PathLike[str]) -> Path:
    """Raise StoreError now if a store could not be written at `path` later (before training):
    a missing or unwritable folder, a folder in the way, a file that is not a gradscope store
    or is one from a newer gradscope. Creates nothing."""
    path = Path(path)
    folder = path.parent
    where = str(path)
    if not folder.is_dir():
        raise StoreError(f"Cannot write the run store {where!r}: the folder {str(folder)!r} does not exist. Create it first, or pass another path.")
    if path.is_dir():
        raise StoreError(f"Cannot write the run store {where!r}: it is a folder. Pass a file path such as 'runs/exp1{STORE_SUFFIX}'.")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.R_OK | os.W_OK)):
        raise StoreError(f"Cannot write the run store {where!r}: no permission to write there. Pass a path in a folder you can write to.")
    if path.exists() and path.stat().st_size > 0:
        _check_replaceable(path)
    return path


def _open_for_writing(path: Path) -> tuple[Optional[int], sqlite3.Connection]:
    """Check and lock `path`, then create (or replace) the store there. Every refusal is a
    StoreError raised before anything is written."""
    where = str(path)
    check_store_path(path)
    existed = path.exists() and path.stat().st_size > 0
    try:
        lock_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise StoreError(f"Cannot write the run store {where!r}: {exc.strerror}. Pass a path in a folder you can write to.") from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise StoreError(
                    f"Another process (or another watch in this one) is writing the run store {where!r}. Two runs "
                    "cannot stream into one store: give each run its own path."
                ) from None
        connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            _create_schema(connection, replace=existed)
        except sqlite3.Error as exc:
            connection.close()
            raise StoreError(f"Cannot create the run store {where!r}: {exc}.") from None
        connection.isolation_level = ""  # `with connection:` opens and commits one transaction
        return lock_fd, connection
    except BaseException:
        os.close(lock_fd)
        if not existed:
            _remove_quietly(path)
        raise


def _check_replaceable(path: Path) -> None:
    """An existing file is replaced only when it is a gradscope store this version can read."""
    where = str(path)
    if not is_store_file(path):
        raise StoreError(
            f"Cannot write the run store {where!r}: the file exists and is not a gradscope run store. gradscope "
            "does not overwrite other files: pass a new path, or delete the file."
        )
    try:
        version = _store_version(path)
    except RecordFormatError as exc:
        raise StoreError(f"Cannot write the run store {where!r}: {exc}") from None
    if version > STORE_SCHEMA_VERSION:
        raise StoreError(
            f"Cannot write the run store {where!r}: it was written by a newer gradscope (store schema {version}; this "
            f"version writes {STORE_SCHEMA_VERSION}). Pass a new path, or upgrade gradscope."
        )


def _create_schema(connection: sqlite3.Connection, replace: bool) -> None:
    if not replace:  # large pages: a step row of a few KB shares a page instead of wasting most of one
        connection.execute("PRAGMA page_size=65536")
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA cache_size=-1024")  # the writer only appends: 1 MB of page cache, not 2  # a commit survives a killed process (not a power cut) without fsync
    connection.execute("BEGIN IMMEDIATE")
    try:
        if replace:  # one transaction: a reader sees the old run or the new one, never a mix
            for table in _TABLES + _OPTIONAL_TABLES:
                connection.execute(f"DROP TABLE IF EXISTS {table}")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                connection.execute(statement)
        connection.execute(f"PRAGMA application_id={_APPLICATION_ID}")
        connection.execute(f"PRAGMA user_version={STORE_SCHEMA_VERSION}")
        connection.executemany(
            "INSERT INTO info VALUES (?, ?)",
            [("format", STORE_FORMAT), ("schema_version", str(STORE_SCHEMA_VERSION))],
        )
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def _remove_quietly(path: Path) -> None:
    for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            leftover.unlink()
        except OSError:
            pass


# ---- writing a whole record ---------------------------------------------------------------------
def write_store(record: Any, path: str | os.PathLike[str]) -> Path:
    """Save a RunRecord as a store, all or nothing: built beside `path`, then renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size > 0:
        _check_replaceable(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _remove_quietly(temporary)
    try:
        writer = StoreWriter(temporary, record.meta)
        writer.modules = list(record.modules)
        writer.hook_errors = list(record.hook_errors)
        columns = []  # (kind, name, stat, values, measured) in catalog order
        for kind, table in (("layer", record.layer_stats), ("param", record.param_stats)):
            for name, stats in table.items():
                writer.add_series(kind, name, None)
                for stat, series in stats.items():
                    writer.add_series(kind, name, stat)
                    values, measured = column_arrays(series)
                    columns.append((values, measured))
        n = len(record.steps)
        matrix = np.stack([v for v, _ in columns], axis=1) if columns else np.zeros((n, 0))
        mask = np.stack([m for _, m in columns], axis=1) if columns else np.zeros((n, 0), bool)
        intervals = record.intervals if len(record.intervals) == n else [None] * n
        for index, step in enumerate(record.steps):
            writer.append_packed(step, matrix[index], mask[index], interval=intervals[index])
        writer._queue.extend(("INSERT INTO skipped_steps (step) VALUES (?)", (s,)) for s in record.skipped_steps)
        for name, pairs in record.scalars.items():
            name_id = len(writer._scalar_ids)
            writer._scalar_ids[name] = name_id
            writer._put("INSERT INTO scalar_names VALUES (?, ?)", (name_id, name))
            for seq, (step, value) in enumerate(pairs):
                stored = None if value is None or math.isnan(value) else float(value)
                writer._put("INSERT INTO scalars VALUES (?, ?, ?, ?)", (name_id, seq, step, stored))
        writer.close()
        if writer.failure is not None:
            raise StoreError(f"Cannot write the run store {str(path)!r}: {writer.failure}.")
        os.replace(temporary, path)
    except BaseException:
        _remove_quietly(temporary)
        raise
    _remove_quietly(Path(f"{path}-wal"))
    _remove_quietly(Path(f"{path}-shm"))
    return path


# ---- reading ------------------------------------------------------------------------------------
def _connect_for_reading(path: Path) -> sqlite3.Connection:
    where = str(path)
    if not path.exists():
        raise RecordFormatError(f"Run file {where!r} does not exist. Check the path.")
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return connection
    except sqlite3.Error:
        pass
    try:  # a store whose writer was killed left its journal behind: a read-write open replays it
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return connection
    except sqlite3.Error as exc:
        raise RecordFormatError(_damaged(where, exc)) from None


def _damaged(where: str, exc: BaseException) -> str:
    return (
        f"Run store {where!r} is damaged or truncated ({exc}); it cannot be read. A store that was being written "
        "when its process was killed stays readable, so this file was most likely cut short or changed afterwards. "
        "Re-create it, or restore it from a copy."
    )


def _store_version(path: Path) -> int:
    connection = _connect_for_reading(path)
    try:
        return _check_format(connection, str(path))
    finally:
        connection.close()


def _check_format(connection: sqlite3.Connection, where: str) -> int:
    try:
        application_id = connection.execute("PRAGMA application_id").fetchone()[0]
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        info = dict(connection.execute("SELECT key, value FROM info").fetchall()) if "info" in tables else {}
    except sqlite3.Error as exc:
        raise RecordFormatError(_damaged(where, exc)) from None
    if application_id != _APPLICATION_ID or info.get("format") != STORE_FORMAT:
        raise RecordFormatError(
            f"Run file {where!r} is an SQLite database but not a gradscope run store. Pass a store written by "
            f"`gradscope.watch(..., path=...)` or a run saved as JSON."
        )
    try:
        version = int(info["schema_version"])
    except (KeyError, ValueError):
        raise RecordFormatError(_damaged(where, ValueError("no schema version"))) from None
    missing = [t for t in _TABLES if t not in tables]
    if version <= STORE_SCHEMA_VERSION and missing:
        raise RecordFormatError(_damaged(where, ValueError(f"missing tables: {', '.join(missing)}")))
    return version


def read_store(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A run store's contents as the fields of a RunRecord (`RunRecord.load` builds it). Works
    while its writer runs, and after it was killed: every committed step is there."""
    path = Path(path)
    where = str(path)
    connection = _connect_for_reading(path)
    try:
        version = _check_format(connection, where)
        if version > STORE_SCHEMA_VERSION:
            raise RecordFormatError(
                f"Run store {where!r} uses store schema version {version}, but this gradscope reads version "
                f"{STORE_SCHEMA_VERSION}. Install the gradscope version that wrote it, or a newer one."
            )
        connection.execute("BEGIN")  # one snapshot: a live writer's later commits are not half-seen
        try:
            return _read_record(connection)
        finally:
            connection.execute("COMMIT")
    except RecordFormatError:
        raise
    except (sqlite3.Error, ValueError, KeyError, TypeError, IndexError) as exc:
        raise RecordFormatError(_damaged(where, exc)) from None
    finally:
        connection.close()


def _read_record(connection: sqlite3.Connection) -> dict[str, Any]:
    info = dict(connection.execute("SELECT key, value FROM info").fetchall())
    meta = RunMeta(**json.loads(info.get("meta", "{}")))
    hook_errors = [HookError(**e) for e in json.loads(info.get("hook_errors", "[]"))]
    modules = [
        ModuleInfo(name=r[0], type=r[1], num_params=r[2], params=json.loads(r[3]), trainable_params=r[4],
                   activation=r[5], is_leaf=bool(r[6]), executed=bool(r[7]))
        for r in connection.execute(
            "SELECT name, type, num_params, params, trainable_params, activation, is_leaf, executed FROM modules ORDER BY position"
        )
    ]
    catalog = connection.execute("SELECT col, kind, name, stat FROM series ORDER BY col").fetchall()
    if [c[0] for c in catalog] != list(range(len(catalog))):
        raise ValueError("the series catalog has gaps")
    width = len(catalog)
    count = connection.execute("SELECT count(*) FROM steps").fetchone()[0]
    # Column-major, so each series is one contiguous row of these matrices.
    values = np.full((width, count), np.nan, np.float32)
    measured = np.zeros((width, count), bool)
    wide: dict[int, list[tuple[int, float]]] = collections.defaultdict(list)
    steps: list[int] = []
    cursor = connection.execute("SELECT seq, step, width, value_blob, measured_blob, wide_blob FROM steps ORDER BY seq")
    index = 0
    while True:
        rows = cursor.fetchmany(_READ_BLOCK)
        if not rows:
            break
        block = np.full((len(rows), width), np.nan, np.float32)
        block_mask = np.zeros((len(rows), width), bool)
        for offset, (seq, step, row_width, value_blob, measured_blob, wide_blob) in enumerate(rows):
            if seq != index + offset or row_width > width:
                raise ValueError(f"step row {seq} is out of order or wider than the catalog")
            row_values, row_measured, row_wide = unpack_row(row_width, value_blob, measured_blob, wide_blob)
            block[offset, :row_width] = row_values
            block_mask[offset, :row_width] = row_measured
            if row_wide is not None:
                for col, number in zip(row_wide[0].tolist(), row_wide[1].tolist()):
                    wide[col].append((index + offset, number))
            steps.append(step)
        values[:, index : index + len(rows)] = block.T
        measured[:, index : index + len(rows)] = block_mask.T
        index += len(rows)
    layer_stats: dict[str, dict[str, Column]] = {}
    param_stats: dict[str, dict[str, Column]] = {}
    for kind, name in connection.execute("SELECT kind, name FROM names ORDER BY id"):
        (layer_stats if kind == "layer" else param_stats)[name] = {}
    for col, kind, name, stat in catalog:
        if col in wide:
            exact = values[col].astype(np.float64)
            for row, number in wide[col]:
                exact[row] = number
            column = Column.from_arrays(exact, measured[col])
        else:
            column = Column.from_arrays(values[col], measured[col])
        (layer_stats if kind == "layer" else param_stats).setdefault(name, {})[stat] = column
    skipped = [r[0] for r in connection.execute("SELECT step FROM skipped_steps ORDER BY seq")]
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    intervals = []
    if "step_intervals" in tables:
        intervals = [r[0] for r in connection.execute("SELECT interval FROM step_intervals ORDER BY seq")]
    if intervals and len(intervals) != len(steps):  # committed with their steps: only a damaged store differs
        raise ValueError(f"{len(intervals)} recording intervals for {len(steps)} recorded steps")
    names = dict(connection.execute("SELECT id, name FROM scalar_names ORDER BY id").fetchall())
    scalars: dict[str, list[tuple[int, float]]] = {name: [] for name in names.values()}
    for name_id, step, value in connection.execute("SELECT name_id, step, value FROM scalars ORDER BY name_id, seq"):
        scalars[names[name_id]].append((step, float("nan") if value is None else value))
    return {
        "meta": meta,
        "modules": modules,
        "steps": steps,
        "skipped_steps": skipped,
        "intervals": intervals,
        "layer_stats": layer_stats,
        "param_stats": param_stats,
        "scalars": scalars,
        "hook_errors": hook_errors,
    }
