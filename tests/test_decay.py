"""The first/last ratio and the per-layer decay fit, against numpy's least squares."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gradscope.decay import decay_per_layer, first_last_ratio


def test_a_geometric_signal_decays_by_its_factor():
    signal = [0.25**k for k in range(5, -1, -1)]  # forward order: the first layer has the least
    assert decay_per_layer(signal) == pytest.approx(0.25, rel=1e-12)
    assert first_last_ratio(signal) == pytest.approx(0.25**5)
    assert decay_per_layer([4.0, 2.0, 1.0]) == pytest.approx(2.0)  # growing towards the input: exploding


def test_fit_matches_numpy_and_zeros_keep_their_place():
    rng = np.random.default_rng(0)
    signal = list(np.exp(rng.normal(size=7)))
    distance = np.arange(7)[::-1]
    assert decay_per_layer(signal) == pytest.approx(math.exp(np.polyfit(distance, np.log(signal), 1)[0]), rel=1e-12)
    signal[0] = 0.0  # underflowed: left out, but the others stay as far from the output as they are
    slope = np.polyfit(distance[1:], np.log(signal[1:]), 1)[0]
    assert decay_per_layer(signal) == pytest.approx(math.exp(slope), rel=1e-12)


@pytest.mark.parametrize("signal", [[1.0, None, 2.0], [1.0, math.nan, 2.0], [0.0, 0.0, 2.0], [2.0]])
def test_no_fit_without_two_measurable_layers(signal):
    assert decay_per_layer(signal) is None


def test_ratio_needs_both_ends():
    assert first_last_ratio([None, 1.0]) is None and first_last_ratio([1.0, 0.0]) is None
    assert first_last_ratio([]) is None
