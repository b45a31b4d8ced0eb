"""Healthy originals raise no warning or error; each broken twin raises the finding of its defect."""

from __future__ import annotations

import pytest

from .cases import all_cases, detected, diagnose_all, false_alarms

# Cases that still fail for a reason outside the rules, with the reason; strict, so a fix shows up.
KNOWN_GAPS: dict[str, str] = {}

CASES = all_cases()


def _param(case):
    marks = [pytest.mark.xfail(reason=KNOWN_GAPS[case.name], strict=True)] if case.name in KNOWN_GAPS else []
    return pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES if c.healthy])
def test_healthy_original_raises_no_warning_or_error(case):
    records = case.train()
    for network, record in records.items():  # the rules had something to look at
        assert record.steps and record.scalars.get("loss"), network
    assert false_alarms(diagnose_all(records)) == [], f"{case.name} ({case.style})"


@pytest.mark.parametrize("case", [_param(c) for c in CASES if not c.healthy])
def test_broken_twin_raises_the_finding_of_its_defect(case):
    diagnoses = diagnose_all(case.train())
    codes = {net: d.codes() for net, d in diagnoses.items()}
    assert detected(case, diagnoses), f"{case.name}: expected {case.expected}, got {codes}"
