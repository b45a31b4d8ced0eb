"""Writing report files: atomically, and with an error a user can act on."""

from __future__ import annotations

from pathlib import Path

from ..errors import GradscopeError
from ..record import write_atomic


class ReportWriteError(GradscopeError, OSError):
    """A report file or folder could not be written (permissions, a file in the way, a full disk)."""


def write_report_file(path: Path, payload: bytes, what: str) -> Path:
    """Write `payload` to `path` via a temporary file; `what` names the file in the error ("HTML report")."""
    try:
        write_atomic(path, payload)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ReportWriteError(
            f"Cannot write the {what} to {str(path)!r}: {reason}. Choose a folder you can write to "
            "(check that it exists or can be created, is not a file, and has free space), or fix its "
            "permissions."
        ) from None
    return path


def write_figure_files(directory: Path, pngs: dict[str, bytes]) -> list[Path]:
    """Write `<name>.png` for each figure into `directory` (created if needed)."""
    if directory.exists() and not directory.is_dir():
        raise ReportWriteError(
            f"Cannot write figures into {str(directory)!r}: it is a file, not a folder. "
            "Pass a folder path (it is created if it does not exist)."
        )
    return [write_report_file(directory / f"{name}.png", png, "figure") for name, png in pngs.items()]
