"""Exceptions gradscope raises for problems a user can fix.

Every message is one paragraph that says what was wrong and how to fix it; the CLI prints
it as is and exits with status 2, so no user mistake ends in a bare traceback.
"""

from __future__ import annotations


class GradscopeError(Exception):
    """Base class of every error gradscope raises on purpose."""


class RecordFormatError(GradscopeError, ValueError):
    """A run file is not valid JSON, is truncated, or was written by an unknown schema."""


class ConfigError(GradscopeError, ValueError):
    """A YAML config is malformed, names an unknown key, or has a value of the wrong type."""


class ModelFileError(GradscopeError):
    """A model file cannot be loaded, does not define a model, or its model cannot run."""


class UnknownSeriesError(GradscopeError, KeyError):
    """`RunRecord.series` was asked for a statistic or a layer the record does not hold."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""
