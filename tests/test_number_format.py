"""One number formatter, two styles: the terminal's and the HTML page's spelling of the same values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gradscope.number_format import HTML, compact, format_number, percent


@pytest.mark.parametrize(
    "value, text, html",
    [
        (None, "-", "\u2014"),
        (0.0, "0", "0"),
        (-0.0, "0", "0"),
        (0.012345, "0.0123", "0.01235"),
        (0.0012345, "1.2e-03", "0.001234"),
        (1.2e-7, "1.2e-07", "1.200e-07"),
        (12345.6, "1.2e+04", "1.235e+04"),
        (123456.0, "1.2e+05", "1.235e+05"),
        (42, "42", "42"),
        (1234567, "1.2e+06", "1,234,567"),
        (math.nan, "nan", "NaN"),
        (-math.inf, "-inf", "-Inf"),
        (True, "True", "True"),
        (np.float32(0.5), "0.5", "0.5"),
    ],
)
def test_spellings(value, text, html):
    assert compact(value) == format_number(value) == text
    assert format_number(value, HTML) == html


def test_percent():
    assert [percent(v) for v in (None, 0.0, 0.004, 0.37, 1.0, math.nan)] == ["-", "0%", "<1%", "37%", "100%", "nan"]
