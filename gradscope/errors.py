"""Every exception class gradscope raises on purpose, in one place.

Every message is one paragraph that says what was wrong and how to fix it; the CLI prints
it as is and exits with status 2, so no user mistake ends in a bare traceback. One module so
that a caller can see at a glance what it may have to catch, and so that no module has to
import another one's internals just to name its error.

Messages name the library's own fields and arguments (`input_shape`, `config`), never a
command-line flag: the CLI maps fields to its flags.
"""

from __future__ import annotations


class GradscopeError(Exception):
    """Base class of every error gradscope raises on purpose."""


class _LookupError(GradscopeError, KeyError):
    """A lookup by name failed; prints its message plainly (KeyError would quote it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class RecordFormatError(GradscopeError, ValueError):
    """A run or sweep file is not valid JSON, is truncated, or was written by an unknown schema."""


class ConfigError(GradscopeError, ValueError):
    """A YAML config is malformed, names an unknown key, or has a value of the wrong type."""


class ModelFileError(GradscopeError):
    """A model file cannot be loaded, does not define a model, or its model cannot run."""


class OutputError(GradscopeError, OSError):
    """An output file or folder cannot be written: a missing permission, a file in the way, a full disk."""


class UnknownSeriesError(_LookupError):
    """`RunRecord.series` was asked for a statistic or a layer the record does not hold."""


class SweepOptionError(GradscopeError, ValueError):
    """A sweep option (activation, depth, norm, dropout, init, steps, lr, ...) is not valid."""


class DataFileError(GradscopeError, ValueError):
    """A sweep's data file is missing, unreadable, lacks arrays, or holds arrays of the wrong shape."""


class UnknownConfigError(_LookupError):
    """`SweepResult.find` was asked for a configuration the sweep did not run."""


class StoreError(GradscopeError):
    """A run store cannot be written: a missing or unwritable folder, a file that is not a
    gradscope store, a store from a newer gradscope, or another process writing the same path."""
