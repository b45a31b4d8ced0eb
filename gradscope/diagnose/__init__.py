"""Diagnosis: rules that turn a RunRecord into findings. (Being written: see issue 3.)"""

from __future__ import annotations

from .finding import Diagnosis, Finding, SEVERITIES


def diagnose(record, config=None) -> Diagnosis:  # placeholder until the rules land
    raise NotImplementedError("gradscope.diagnose is not implemented yet")


def load_config(path=None):  # placeholder until the config lands
    raise NotImplementedError("gradscope.load_config is not implemented yet")


__all__ = ["Diagnosis", "Finding", "SEVERITIES", "diagnose", "load_config"]
