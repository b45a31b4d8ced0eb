from __future__ import annotations

import pytest

from gradscope.diagnose.finding import Diagnosis
from gradscope.record import RunRecord
from gradscope.report.html import render_html
from gradscope.report.plots import RenderedFigure, build_figures
from tests.report.records import synthetic_record, vanishing_diagnosis


@pytest.fixture
def record() -> RunRecord:
    return synthetic_record()


@pytest.fixture
def diagnosis(record: RunRecord) -> Diagnosis:
    return vanishing_diagnosis(record)


# Drawing six figures takes seconds: tests that only read them share one drawing.
@pytest.fixture(scope="session")
def small_figures() -> list[RenderedFigure]:
    record = synthetic_record()
    return build_figures(record, vanishing_diagnosis(record))


@pytest.fixture(scope="session")
def small_document(small_figures: list[RenderedFigure]) -> str:
    record = synthetic_record()
    return render_html(record, vanishing_diagnosis(record), figures=small_figures)
