"""What a sweep measured, in the lecture's terms: sentences for the terminal and the HTML page.

Every sentence is built from the measured values of this sweep: which activations keep their
backprop signal at each init, at which depth each stops training, which configurations
diverged instead, and what BatchNorm and dropout changed. Nothing here states a conclusion the
numbers did not show; a sweep that ran one init or no BatchNorm simply gets fewer sentences.
"""

from __future__ import annotations

import statistics
from typing import Iterable, Optional

from ..number_format import ratio
from .networks import recommended_init
from .result import SweepResult
from .summary import DIVERGED, TRAINED, TRAINED_FRACTION, ConfigSummary

# A per-layer factor in this band keeps the signal: over 16 layers it changes at most ~x0.07..x18,
# where the default init's x0.41 (ReLU) leaves 1e-6.
KEEPS_SIGNAL = (0.85, 1.2)

_INIT_NAMES = {"default": "PyTorch's default init", "recommended": "the recommended init",
               "xavier": "Xavier init", "kaiming": "Kaiming init"}
_RULE_NAMES = {"xavier": "Xavier", "kaiming": "Kaiming"}


def describe(result: SweepResult) -> list[str]:
    """The sweep's reading, one sentence (or short paragraph) per item."""
    several_inits = len(result.inits) > 1
    lines = []
    for norm, dropout in _variants(result.summaries):
        chosen = [s for s in result.summaries if (s.config.norm, s.config.dropout) == (norm, dropout)]
        prefix = "" if len(_variants(result.summaries)) == 1 else f"[{_variant(norm, dropout)}] "
        lines += [prefix + line for line in _signal_lines(chosen) + _training_lines(chosen, several_inits)]
    lines += _diverged_lines(result, several_inits)
    lines += _batchnorm_lines(result, several_inits)
    lines += _dropout_lines(result)
    for s in result.failures:
        lines.append(f"Failed: {_name(s, several_inits)}: {s.error}")
    return lines


# ---- the backprop signal at initialisation ------------------------------------------------------


def _signal_lines(chosen: list[ConfigSummary]) -> list[str]:
    inits = _unique(s.config.init for s in chosen)
    parts, keeping = [], {}
    for init in inits:
        factors = _median_factors([s for s in chosen if s.config.init == init])
        if factors:
            listed = ", ".join(f"{activation} x{factor:.2f}" for activation, factor in factors.items())
            parts.append(listed if len(inits) == 1 else f"{listed} at {_INIT_NAMES.get(init, init)}")
            keeping[init] = factors
    if not parts:
        return []
    lines = [
        "At initialisation the backprop signal changes per layer (towards the input) by: " + "; ".join(parts)
        + " (1 = no decay; median over depths)."
    ]
    for init, factors in keeping.items():
        lines.append(_keeps_sentence(init, factors))
    return lines


def _median_factors(chosen: list[ConfigSummary]) -> dict[str, float]:
    factors = {}
    for activation in _unique(s.config.activation for s in chosen):
        values = [s.decay_factor_init for s in chosen if s.config.activation == activation and s.decay_factor_init]
        if values:
            factors[activation] = statistics.median(values)
    return factors


def _keeps_sentence(init: str, factors: dict[str, float]) -> str:
    low, high = KEEPS_SIGNAL
    keep = [a for a, f in factors.items() if low <= f <= high]
    lose = [a for a, f in factors.items() if f < low]
    grow = [a for a, f in factors.items() if f > high]
    where = _INIT_NAMES.get(init, init)
    if init == "recommended":
        where = "their recommended init (" + ", ".join(
            f"{a}: {_RULE_NAMES[recommended_init(a)]}" for a in factors) + ")"
    clauses = []
    if keep:
        verb = "keeps" if len(keep) == 1 else "keep"
        clauses.append(f"{_join(keep)} {verb} the signal (x{low:g} to x{high:g} per layer)")
    if lose:
        lost = f"{_join(lose)} {'loses' if len(lose) == 1 else 'lose'} {'it' if keep else 'the signal'}"
        if keep and "sigmoid" in lose and init in ("recommended", "xavier"):
            lost += " (sigmoid's derivative is at most 1/4, which no init repairs)"
        clauses.append(lost)
    if grow:
        verb = "amplifies" if len(grow) == 1 else "amplify"
        clauses.append(f"{_join(grow)} {verb} {'it' if clauses else 'the signal'}")
    return f"At {where}: " + "; ".join(clauses) + "."


# ---- which depths train ------------------------------------------------------------------------


def _training_lines(chosen: list[ConfigSummary], several_inits: bool) -> list[str]:
    """Per activation: the depths at which it trains, at each init."""
    lines = []
    for activation in _unique(s.config.activation for s in chosen):
        by_init = {}
        for init in _unique(s.config.init for s in chosen):
            runs = sorted((s for s in chosen if (s.config.activation, s.config.init) == (activation, init)),
                          key=lambda s: s.config.depth)
            phrase = _depth_phrase(runs)
            if phrase:
                by_init[init] = phrase
        if not by_init:
            continue
        if len(set(by_init.values())) == 1:
            every = {1: "", 2: ", at both inits"}.get(len(by_init), ", at every init") if several_inits else ""
            lines.append(f"{activation} {next(iter(by_init.values()))}{every}.")
        else:
            lines.append(f"{activation}, " + "; ".join(
                f"at {_INIT_NAMES.get(init, init)}: {phrase}" for init, phrase in by_init.items()) + ".")
    if not lines:
        return []
    chance = next((s.chance_loss for s in chosen if s.chance_loss is not None), None)
    against = f" and the loss of predicting the class frequencies ({chance:.3g})" if chance is not None else ""
    rule = (f"A network trains when its final training loss ends below {TRAINED_FRACTION:.0%} of its first loss"
            f"{against}; it diverges when it ends above its first loss.")
    return [rule, *lines]


def _depth_phrase(runs: list[ConfigSummary]) -> str:
    """'trains up to depth 4 and stops at depth 8', 'trains at every depth up to 16', ... from outcomes."""
    measured = [(s.config.depth, s.outcome) for s in runs if s.outcome is not None]
    if not measured:
        return ""
    trained = [d for d, o in measured if o == TRAINED]
    failing = [d for d, o in measured if o != TRAINED]
    diverged = [d for d, o in measured if o == DIVERGED]
    if not failing:
        return f"trains at every depth up to {trained[-1]}" if len(trained) > 1 else f"trains at depth {trained[0]}"
    if not trained:
        phrase = "trains at no depth" if len(measured) > 1 else f"does not train at depth {failing[0]}"
    elif max(trained) < failing[0]:
        phrase = f"trains up to depth {max(trained)}" if len(trained) > 1 else f"trains at depth {trained[0]}"
        phrase += f" and stops at depth {failing[0]}"
        if diverged[:1] == [failing[0]]:
            phrase += ", where it diverges"
            diverged = diverged[1:]
    else:
        phrase = f"trains at depth {_numbers(trained)} but not at {_numbers(failing)}"
    if diverged:
        phrase += f" (diverges at depth {_numbers(diverged)})"
    return phrase


def _diverged_lines(result: SweepResult, several_inits: bool) -> list[str]:
    """Name every configuration that ended above its first loss (those whose loss turned NaN are
    named among the failures, with the step)."""
    lines = []
    for s in result.summaries:
        if s.outcome != DIVERGED or s.error:
            continue
        signal = ""
        if s.decay_factor_init is not None and KEEPS_SIGNAL[0] <= s.decay_factor_init <= KEEPS_SIGNAL[1]:
            signal = (f", although its backprop signal at init kept x{s.decay_factor_init:.2f} per layer: "
                      "not a vanishing gradient; a smaller learning rate is the first thing to try")
        lines.append(f"Diverged instead of training: {_name(s, several_inits)} at lr {s.config.lr:g}: its training "
                     f"loss went from {s.first_loss:.3g} at step 0 to {s.train_loss:.3g}{signal}.")
    return lines


# ---- what BatchNorm and dropout change ---------------------------------------------------------


def _batchnorm_lines(result: SweepResult, several_inits: bool) -> list[str]:
    """At the deepest depth, per init and dropout: the first/last ratio without and with BatchNorm,
    and which activations train each way."""
    deepest = max((s.config.depth for s in result.summaries), default=0)
    groups: dict[tuple[str, float], list[tuple[ConfigSummary, ConfigSummary]]] = {}
    for s in result.summaries:
        plain = _partner(result, s, norm="none") if s.config.norm == "batchnorm" else None
        if s.config.depth == deepest and plain is not None:
            groups.setdefault((s.config.init, s.config.dropout), []).append((plain, s))
    lines = []
    for (init, dropout), pairs in groups.items():
        where = f"depth {deepest}" + (f", dropout {dropout:g}" if dropout else "")
        where += f" ({_INIT_NAMES.get(init, init)})" if several_inits else ""
        ratios = [
            f"{normed.config.activation} from {ratio(plain.first_last_ratio_init, plain.first_last_bound())} "
            f"to {ratio(normed.first_last_ratio_init, normed.first_last_bound())}"
            for plain, normed in pairs if plain.first_last_ratio_init is not None
            and normed.first_last_ratio_init is not None
        ]
        line = f"BatchNorm at {where}"
        if ratios:
            line += " changes the first/last ratio at init: " + ", ".join(ratios)
        with_bn = [n.config.activation for _, n in pairs if n.outcome == TRAINED]
        without = [p.config.activation for p, _ in pairs if p.outcome == TRAINED]
        line += f"; trains with BatchNorm: {_join(with_bn) if with_bn else 'none'}; without: "
        line += f"{_join(without) if without else 'none'}."
        lines.append(line)
    return lines


def _dropout_lines(result: SweepResult) -> list[str]:
    """Per dropout p > 0: the median validation-minus-training gap with and without it."""
    lines = []
    for p in _unique(s.config.dropout for s in result.summaries if s.config.dropout):
        pairs = [(plain, s) for s in result.summaries if s.config.dropout == p
                 for plain in [_partner(result, s, dropout=0.0)] if plain is not None]
        if not pairs:
            continue
        both = [(a, b) for a, b in pairs if a.outcome == TRAINED and b.outcome == TRAINED
                and a.generalization_gap is not None and b.generalization_gap is not None]
        line = f"Dropout {p:g} (PyTorch's p; keep_prob {1 - p:g})"
        if both:
            before = statistics.median(a.generalization_gap for a, _ in both)
            after = statistics.median(b.generalization_gap for _, b in both)
            line += (f" changes the median validation-minus-training loss gap from {before:.2f} to {after:.2f} "
                     f"over the {len(both)} network{'s' if len(both) > 1 else ''} that trained with and without it")
        else:
            line += " leaves no network that trained both with and without it to compare"
        trained_without = sum(a.outcome == TRAINED for a, _ in pairs)
        trained_with = sum(b.outcome == TRAINED for _, b in pairs)
        line += f"; {trained_with} of {len(pairs)} networks train with it, {trained_without} without."
        lines.append(line)
    return lines


# ---- helpers -----------------------------------------------------------------------------------


def _partner(result: SweepResult, s: ConfigSummary, **change) -> Optional[ConfigSummary]:
    """The same network with one option changed (norm= or dropout=), if the sweep ran it."""
    c = s.config
    wanted = {"norm": c.norm, "dropout": c.dropout, **change}
    for other in result.summaries:
        o = other.config
        if (o.activation, o.depth, o.init, o.norm, o.dropout) == (c.activation, c.depth, c.init,
                                                                  wanted["norm"], wanted["dropout"]):
            return other
    return None


def _name(s: ConfigSummary, several_inits: bool) -> str:
    if not several_inits:
        return s.config.label
    init = s.config.init
    if init == "recommended":
        return f"{s.config.label}, recommended init ({_RULE_NAMES[recommended_init(s.config.activation)]})"
    return s.config.label_with_init


def _variants(summaries: list[ConfigSummary]) -> list[tuple[str, float]]:
    return _unique((s.config.norm, s.config.dropout) for s in summaries)


def _variant(norm: str, dropout: float) -> str:
    return f"{'no norm' if norm == 'none' else norm}, dropout {dropout:g}"


def _unique(values: Iterable) -> list:
    return list(dict.fromkeys(values))


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _numbers(values: Iterable[int]) -> str:
    return ", ".join(str(v) for v in values)
