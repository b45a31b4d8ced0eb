"""Every file gradscope writes or reads, through one door: atomic, all or nothing, NaN-safe, clear errors.

Why one module: a run record, a sweep, an HTML page and a folder of PNGs all promise the
same things to a user (readers never see half a file; a failed command leaves no output
files; a NaN gradient norm survives a round trip through strict JSON; an unreadable file
gets one paragraph saying what is wrong). Written once, each promise is kept the same way.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import OutputError, RecordFormatError


@dataclass
class RenderedFile:
    """One file rendered to memory, not yet written."""

    path: Path
    payload: bytes
    what: str  # names the file in an error: "HTML report", "PNG figure", "JSON run record"


def write_atomic(path: Path, payload: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a report should be as readable as any file
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_all(files: Iterable[RenderedFile]) -> list[Path]:
    """Write each file atomically; if one fails (a full disk), remove the ones this call created, then raise.

    Files that existed before are replaced, not removed: the old version is gone either way,
    and deleting a user's older report would be worse than leaving the newer one.
    """
    created: list[Path] = []
    written: list[Path] = []
    for item in files:
        try:
            existed = item.path.exists()
            write_atomic(item.path, item.payload)
        except OSError as exc:
            for path in created:
                try:
                    path.unlink()
                except OSError:
                    pass
            raise OutputError(
                f"Cannot write the {item.what} to {str(item.path)!r}: {exc.strerror or exc}. No output files were "
                "left behind; choose a folder you can write to (it must exist or be creatable, not be a file, and "
                "have free space), or fix its permissions."
            ) from exc
        written.append(item.path)
        if not existed:
            created.append(item.path)
    return written


def write_file(path: str | os.PathLike[str], payload: bytes, what: str) -> Path:
    """One file, atomically, with `write_all`'s error."""
    return write_all([RenderedFile(Path(path), payload, what)])[0]


def write_into_folder(directory: str | os.PathLike[str], payloads: Mapping[str, bytes], what: str) -> list[Path]:
    """Write each `name -> payload` into `directory` (created if needed), all or nothing."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise OutputError(
            f"Cannot write {what}s into {str(directory)!r}: it is a file, not a folder. "
            "Pass a folder path (it is created if it does not exist)."
        )
    return write_all(RenderedFile(directory / name, payload, what) for name, payload in payloads.items())


# ---- JSON -------------------------------------------------------------------------------------
# JSON has no NaN/Inf, but a NaN gradient norm or loss is a finding worth keeping: store the
# three non-finite floats as the strings "nan", "inf", "-inf" and turn them back on reading.
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def to_json_value(value: Any, stringify_unknown: bool = False) -> Any:
    """`value` with non-finite floats as strings, tuples as lists, numpy/torch scalars as Python numbers.

    Anything else without a JSON form is left as it is, so that `json.dumps` refuses it (a run
    record holding an object is a bug to see), unless `stringify_unknown`: then it becomes its
    `str`, so that a rule's free-form evidence can never make a report fail to write.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
    if isinstance(value, dict):
        return {str(k): to_json_value(v, stringify_unknown) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v, stringify_unknown) for v in value]
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if hasattr(value, "item"):  # numpy / torch scalars
        try:
            return to_json_value(value.item(), stringify_unknown)
        except (TypeError, ValueError):
            pass
    return str(value) if stringify_unknown else value


def from_json_value(value: Any) -> Any:
    """Undo `to_json_value`'s strings for non-finite floats.

    Apply it only to numbers' places (statistic columns, metrics): a module may well be named "inf".
    """
    if isinstance(value, str) and value in _NONFINITE:
        return _NONFINITE[value]
    if isinstance(value, dict):
        return {k: from_json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json_value(v) for v in value]
    return value


def json_text(data: Any, compact: bool = False) -> str:
    """Strict JSON (a NaN left in `data` is a bug, not a file nobody else can read); `compact` for big files."""
    if compact:
        return json.dumps(data, separators=(",", ":"), allow_nan=False)
    return json.dumps(data, indent=1, allow_nan=False)


def read_json_file(path: Path, what: str, remedy: str) -> Any:
    """Parse a JSON file, turning every way it can be unreadable into one clear RecordFormatError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecordFormatError(f"{what} {str(path)!r} does not exist. Check the path.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordFormatError(f"Cannot read {what.lower()} {str(path)!r}: {exc}.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordFormatError(
            f"{what} {str(path)!r} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            f"it may be truncated or not written by gradscope. {remedy}"
        ) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
