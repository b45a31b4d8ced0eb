"""Plain-language sentences about a sweep's result, shared by the terminal output and the HTML page."""

from __future__ import annotations

import statistics
from typing import Optional

from .result import SweepResult
from .summary import ConfigSummary

# A network "did not train" when its final training loss is still this close to where it started.
NOT_TRAINED_FRACTION = 0.95


def did_train(summary: ConfigSummary, record_first_loss: Optional[float]) -> Optional[bool]:
    if summary.error or summary.train_loss is None or record_first_loss is None:
        return None
    return summary.train_loss < NOT_TRAINED_FRACTION * record_first_loss


def describe(result: SweepResult) -> list[str]:
    """A few sentences: per-layer decay per activation, which networks did not train, failures."""
    lines = []
    variants = list(dict.fromkeys((s.config.norm, s.config.dropout) for s in result.summaries))
    for norm, dropout in variants:
        chosen = [s for s in result.summaries if (s.config.norm, s.config.dropout) == (norm, dropout)]
        prefix = "" if len(variants) == 1 else f"[{_variant(norm, dropout)}] "
        factors = []
        for activation in dict.fromkeys(s.config.activation for s in chosen):
            values = [s.decay_factor_init for s in chosen if s.config.activation == activation and s.decay_factor_init]
            if values:
                factors.append(f"{activation} x{statistics.median(values):.2f}")
        if factors:
            lines.append(
                f"{prefix}At initialisation the backprop signal changes per layer (towards the input) by: "
                + ", ".join(factors) + " (1 = no decay; median over depths)."
            )
        stalled = _stalled(result, chosen)
        if stalled:
            lines.append(f"{prefix}Did not train (final training loss within 5% of the first): {stalled}.")
    lines += _batchnorm_effect(result)
    for s in result.failures:
        lines.append(f"Failed: {s.config.label}: {s.error}")
    return lines


def _stalled(result: SweepResult, chosen: list[ConfigSummary]) -> str:
    by_activation: dict[str, list[int]] = {}
    for s in chosen:
        record = result.records[result.summaries.index(s)]
        first = None
        if record is not None and "loss" in record.scalars and record.scalars["loss"]:
            first = record.scalars["loss"][0][1]
        if did_train(s, first) is False:
            by_activation.setdefault(s.config.activation, []).append(s.config.depth)
    return "; ".join(f"{a} at depth {', '.join(map(str, sorted(d)))}" for a, d in by_activation.items())


def _batchnorm_effect(result: SweepResult) -> list[str]:
    lines = []
    for s in result.summaries:
        if s.config.norm != "batchnorm":
            continue
        try:
            plain = result.summary(s.config.activation, s.config.depth, "none", s.config.dropout)
        except KeyError:
            continue
        if plain.first_last_ratio_init and s.first_last_ratio_init and s.config.depth == max(result.options.get("depths", [0])):
            lines.append(
                f"BatchNorm raises the first/last ratio of {s.config.activation} at depth {s.config.depth} "
                f"from {plain.first_last_ratio_init:.2g} to {s.first_last_ratio_init:.2g}."
            )
    return lines


def _variant(norm: str, dropout: float) -> str:
    return f"{'no norm' if norm == 'none' else norm}, dropout {dropout:g}"
