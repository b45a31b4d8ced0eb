"""The sweep's reading: every sentence follows the measured values it is given.

The results here are built by hand (no training), so each test can change one measured number
and see the sentence change with it; test_theory.py checks a divergence on a real sweep.
"""

from __future__ import annotations

import dataclasses
import html
import re

import pytest

from gradscope.number_format import ratio
from gradscope.report import sweep_table
from gradscope.report.sweep_html import render_sweep_html
from gradscope.sweep import ConfigSummary, LayerProfile, SweepConfig, SweepResult
from gradscope.sweep.reading import describe
from gradscope.sweep.summary import DIVERGED, FAILED, STALLED, TRAINED, fit_decay_factor

CHANCE = 1.37


def measured(activation, depth, init, factor, first, final, norm="none", dropout=0.0, val=None, lr=0.1, error=None):
    """A summary whose backprop signal shrinks by `factor` per layer and whose loss went first -> final."""
    signal = [0.02 * factor ** (depth - 1 - layer) for layer in range(depth)]
    return ConfigSummary(
        config=SweepConfig(activation, depth, norm=norm, dropout=dropout, init=init, lr=lr),
        backprop=LayerProfile(init=signal, final=signal),
        first_last_ratio_init=signal[0] / signal[-1],
        decay_factor_init=fit_decay_factor(signal),
        first_loss=first, chance_loss=CHANCE, train_loss=final, val_loss=final + 0.3 if val is None else val,
        steps_done=100, error=error,
    )


def result_of(*summaries):
    return SweepResult(summaries=list(summaries), records=[None] * len(summaries))


def lecture_result(relu_recommended_final=2.59):
    """The shape of the default sweep's measurements at depths 4 and 16."""
    return result_of(
        measured("sigmoid", 4, "default", 0.14, 1.41, 1.373), measured("sigmoid", 4, "recommended", 0.24, 1.62, 1.369),
        measured("sigmoid", 16, "default", 0.14, 1.50, 1.373),
        measured("sigmoid", 16, "recommended", 0.24, 1.65, 1.373),
        measured("tanh", 4, "default", 0.56, 1.38, 0.19), measured("tanh", 4, "recommended", 1.11, 1.85, 0.01),
        measured("tanh", 16, "default", 0.56, 1.38, 1.373), measured("tanh", 16, "recommended", 1.11, 1.62, 0.001),
        measured("relu", 4, "default", 0.41, 1.39, 0.14), measured("relu", 4, "recommended", 1.01, 1.81, 0.001),
        measured("relu", 16, "default", 0.41, 1.38, 1.373),
        measured("relu", 16, "recommended", 0.97, 1.52, relu_recommended_final),
    )


def test_outcome_follows_the_losses():
    assert measured("relu", 4, "default", 0.4, 1.39, 0.14).outcome == TRAINED
    assert measured("relu", 4, "default", 0.4, 1.39, 1.373).outcome == STALLED  # only learned the class frequencies
    assert measured("relu", 4, "default", 0.4, 1.62, 1.369).outcome == STALLED  # below its first loss, not below chance
    assert measured("relu", 4, "default", 0.4, 1.52, 2.59).outcome == DIVERGED  # ends above its first loss
    not_finite = measured("relu", 4, "default", 0.4, 1.52, float("nan"), error="the training loss became nan")
    assert not_finite.outcome == DIVERGED
    assert measured("relu", 4, "default", 0.4, 1.52, 1.0, error="RuntimeError: boom").outcome == FAILED
    assert dataclasses.replace(measured("relu", 4, "default", 0.4, 1.39, 0.1), first_loss=None).outcome is None


def test_the_lesson_names_who_keeps_the_signal_and_where_training_stops():
    lines = describe(lecture_result())
    assert lines[0] == (
        "At initialisation the backprop signal changes per layer (towards the input) by: sigmoid x0.14, tanh x0.56, "
        "relu x0.41 at PyTorch's default init; sigmoid x0.24, tanh x1.11, relu x0.99 at the recommended init "
        "(1 = no decay; median over depths)."
    )
    assert "At PyTorch's default init: sigmoid, tanh and relu lose the signal." in lines
    assert ("At their recommended init (sigmoid: Xavier, tanh: Xavier, relu: Kaiming): tanh and relu keep the signal "
            "(x0.85 to x1.2 per layer); sigmoid loses it (sigmoid's derivative is at most 1/4, which no init "
            "repairs).") in lines
    assert "sigmoid trains at no depth, at both inits." in lines
    assert ("tanh, at PyTorch's default init: trains at depth 4 and stops at depth 16; at the recommended init: "
            "trains at every depth up to 16.") in lines
    assert ("relu, at PyTorch's default init: trains at depth 4 and stops at depth 16; at the recommended init: "
            "trains at depth 4 and stops at depth 16, where it diverges.") in lines


def test_a_diverged_configuration_is_named_as_diverged_with_its_losses():
    lines = describe(lecture_result())
    diverged = [line for line in lines if line.startswith("Diverged")]
    assert diverged == [(
        "Diverged instead of training: relu, depth 16, recommended init (Kaiming) at lr 0.1: its training loss went "
        "from 1.52 at step 0 to 2.59, although its backprop signal at init kept x0.97 per layer: not a vanishing "
        "gradient; a smaller learning rate is the first thing to try."
    )]
    # the same sweep where that network trained: no divergence is claimed, and relu trains at 16
    trained = describe(lecture_result(relu_recommended_final=0.2))
    assert not any(line.startswith("Diverged") for line in trained)
    relu = next(line for line in trained if line.startswith("relu"))
    assert "at the recommended init: trains at every depth up to 16" in relu


def test_batchnorm_and_dropout_sentences_come_from_their_partners():
    result = result_of(
        measured("sigmoid", 16, "default", 0.14, 1.50, 1.373),
        measured("sigmoid", 16, "default", 1.05, 1.40, 0.30, norm="batchnorm"),
        measured("relu", 16, "default", 0.41, 1.38, 0.20, val=1.80),
        measured("relu", 16, "default", 0.50, 1.38, 0.40, dropout=0.5, val=0.70),
    )
    lines = describe(result)
    bn = next(line for line in lines if line.startswith("BatchNorm"))
    assert bn == ("BatchNorm at depth 16 changes the first/last ratio at init: sigmoid from 1.6e-13 to 2.1; trains "
                  "with BatchNorm: sigmoid; without: none.")
    dropout = next(line for line in lines if line.startswith("Dropout"))
    assert dropout == ("Dropout 0.5 (PyTorch's p; keep_prob 0.5) changes the median validation-minus-training loss gap "
                       "from 1.60 to 0.30 over the 1 network that trained with and without it; 1 of 1 networks train "
                       "with it, 1 without.")


def test_a_ratio_that_underflowed_prints_as_a_bound_never_zero():
    signal = [0.0, 0.0, 2.6e-21, 1e-12, 0.023]
    summary = ConfigSummary(config=SweepConfig("sigmoid", 5, init="default"), backprop=LayerProfile(init=signal),
                            first_last_ratio_init=0.0, decay_factor_init=fit_decay_factor(signal))
    assert summary.first_last_bound("init") == pytest.approx(2.6e-21 / 0.023)
    assert ratio(0.0, summary.first_last_bound("init")) == "< 1.1e-19"
    assert ratio(0.0) == "< 1e-38"
    assert ratio(3e-7) == "3e-07" and ratio(None) == "-"
    result = result_of(summary)
    cells = re.split(r"\s{2,}", sweep_table(result).splitlines()[-1].strip())
    assert cells[:6] == ["sigmoid", "5", "none", "0", "default", "< 1.1e-19"]
    page = html.unescape(render_sweep_html(result, figures=[]))
    assert "< 1.1e-19" in page and 'data-sort="1.13' in page  # shown as a bound, sorted by it
