"""Diagnosis: rules that turn a RunRecord into findings with evidence and recommendations.

    diagnosis = gradscope.diagnose(record)                  # shipped thresholds
    diagnosis = gradscope.diagnose(record, "my.yaml")       # user YAML merged over them
    for finding in diagnosis: ...                           # most severe first
"""

from __future__ import annotations

from ..errors import RecordFormatError
from ..record import RunRecord
from .config import Config, ConfigSource, default_config, load_config, resolve_config
from .engine import run_rules
from .finding import SEVERITIES, Diagnosis, Finding
from .rules import ALL_RULES


def diagnose(record: RunRecord, config: ConfigSource = None) -> Diagnosis:
    """Run every enabled rule over `record`.

    `config` is a Config from `load_config`, a path to a YAML file, a {section: {key: value}}
    dict of overrides, or None for the shipped defaults.
    """
    if not isinstance(record, RunRecord):
        raise RecordFormatError(
            f"gradscope.diagnose needs a RunRecord (run.record after gradscope.watch, or RunRecord.load(path)), "
            f"not {type(record).__name__}."
        )
    return run_rules(record, resolve_config(config), ALL_RULES)


__all__ = ["ALL_RULES", "Config", "Diagnosis", "Finding", "SEVERITIES", "default_config", "diagnose", "load_config"]
