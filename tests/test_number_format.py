"""One number formatter, two styles: the terminal's and the HTML page's spelling of the same values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gradscope.number_format import HTML, compact, fixed, format_number, percent, ratio


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


def test_ratio_never_reads_zero_and_fixed_keeps_its_decimals():
    assert [ratio(v) for v in (None, 0.0, 3e-7, 0.25)] == ["-", "< 1e-38", "3e-07", "0.25"]
    assert ratio(0.0, below=1.07e-19) == "< 1.1e-19"
    assert [fixed(v) for v in (None, 0.6931, 1.0)] == ["-", "0.693", "1.000"]
