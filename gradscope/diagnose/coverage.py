"""What was not measured, and why: the reason behind every empty cell of a report's layer table.

A statistic can be missing from a layer for many reasons: it does not apply to the module (a ReLU has
no gradient of its own, a Linear cannot saturate), the activation ran inside a fused module hooks
cannot see into (nn.LSTM), the statistic was switched off, the module never ran, the forward ran
compiled without hooks, or the layer ran only between recorded steps. A silent "-" hides which. The
reasons are decided here, once, from what the record already knows (its module table, the watch
options in `meta.options`, its notes and hook errors); the text table, the HTML report, the JSON
record and the rules' "not checked" notes all read them from here.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np

from ..columns import column_arrays
from ..record import ModuleInfo, RunRecord
from ..runinfo import UNSEEN_FORWARD_MARK
from ..statdefs import NONNEGATIVE, RELU_FAMILY, SATURATING, STATS_BY_NAME
from .reading import has_stat, is_functional, layer_summary

# The statistics the report tables show (text and HTML): the ones the JSON explains too.
TABLE_STATS: tuple[str, ...] = (
    "grad_rms", "grad_max", "update_ratio", "backprop_norm", "act_sparsity", "act_dead_frac", "act_saturation"
)
DEAD_UNIT_KINDS = RELU_FAMILY | NONNEGATIVE  # the activations act_dead_frac is measured on

# Modules whose nonlinearities run inside one fused op (or a C++ kernel), where no hook reaches them.
FUSED_MODULES: dict[str, str] = {
    "LSTM": "sigmoid gates and tanh",
    "LSTMCell": "sigmoid gates and tanh",
    "GRU": "sigmoid gates and tanh",
    "GRUCell": "sigmoid gates and tanh",
    "RNN": "tanh (or relu)",
    "RNNCell": "tanh (or relu)",
    "MultiheadAttention": "attention softmax (scaled_dot_product_attention)",
}

# How each statistic gets into a record: the hint when a record has none of it at all.
HOW_TO_RECORD = {
    "update_ratio": "it is recorded only when the optimizer is passed: gradscope.watch(model, optimizer=opt)",
    "backprop_norm": "it is recorded with gradients=True (the default) in gradscope.watch and needs loss.backward()",
    "act_": "activation statistics are recorded with activations=True (the default) in gradscope.watch",
    "grad_": "gradient statistics are recorded with gradients=True (the default) and need loss.backward()",
}

# Each cell label, said whole: the legend under the text table and in the HTML report.
LEGEND: dict[str, str] = {
    "n/a": "Does not apply: gradients and updates need parameters of the module's own, dead units a ReLU-like "
    "or non-negative activation, saturation a sigmoid/tanh-like one; a function's gradient is not hooked.",
    "fused": "The activations run inside a fused module (nn.LSTM, nn.GRU, nn.MultiheadAttention) that hooks "
    "cannot see into.",
    "off": "Switched off for this run: watch(activations=False), gradients=False or update_ratio=False.",
    "no opt": "Needs the optimizer: gradscope.watch(model, optimizer=opt) records the update of each step.",
    "unused": "The module never ran in a training forward pass.",
    "eval": "The module ran only in eval mode (module.eval()) during training, where activations are not measured.",
    "compile": "The forward ran without gradscope's hooks (under torch.compile(fullgraph=True), or compiled before "
    "gradscope attached).",
    "between": "The module ran in no recorded step (every=N or budget=): unused, or run only between them.",
    "frozen": "The module's parameters are frozen (requires_grad=False): no gradient, no update.",
    "no grad": "No gradient reached it at a recorded step (output not in the loss, detached, or only frozen "
    "layers before it).",
    "absent": "No layer of this record has this statistic (see the not-checked notes under the findings).",
    "skipped": "Every recorded value is from a step GradScaler skipped; gradients of skipped steps are left out.",
    "nan": "Measured, but every value was NaN or Inf.",
    "failed": "A gradscope hook failed for this module (see the hook errors in the run notes).",
    "none": "No value reached the record (see the run notes).",
}


@dataclass(frozen=True)
class Gap:
    """Why one statistic of one layer has no value: `label` for a table cell, `reason` said whole."""

    label: str  # a key of LEGEND
    reason: str


class Coverage:
    """The reasons for one record; build it once (`coverage(record)`) and ask per cell."""

    def __init__(self, record: RunRecord) -> None:
        self.record = record
        options = record.meta.options or {}
        self.activations_on = options.get("activations", True) is not False
        self.gradients_on = options.get("gradients", True) is not False
        self.has_optimizer = record.meta.grad_source != "backward"
        self.update_ratio_on = options.get("update_ratio", True) is not False
        self.forward_unseen = any(UNSEEN_FORWARD_MARK in note for note in record.meta.notes)
        self.interval = options.get("every", record.meta.every) or record.meta.every
        self._present: dict[str, bool] = {}  # statistic -> some layer has a value of it
        self._layers_with_values: dict[str, bool] = {}
        self.failed = {e.where.split(":", 1)[1] for e in record.hook_errors if ":" in e.where}

    # ---- one cell --------------------------------------------------------------------------------
    def cell(self, info: ModuleInfo, stat: str) -> tuple[Optional[float], Optional[Gap]]:
        """(the number the tables show, None) or (None, why there is none)."""
        value = layer_summary(self.record, stat, info.name)
        return (value, None) if value is not None else (None, self.gap(info, stat))

    def gap(self, info: ModuleInfo, stat: str) -> Gap:
        """Why `stat` of `info` has no summary value; asked only where `layer_summary` is None."""
        found = (
            self._does_not_apply(info, stat)
            or self._switched_off(info, stat)
            or self._not_run(info, stat)
            or self._measured_but_unusable(info, stat)
            or self._why_empty(info, stat)
        )
        reason = found.reason[:1].upper() + found.reason[1:]
        return Gap(found.label, reason if reason.endswith(".") else reason + ".")

    def _does_not_apply(self, info: ModuleInfo, stat: str) -> Optional[Gap]:
        source = STATS_BY_NAME[stat].source if stat in STATS_BY_NAME else ""
        inside = FUSED_MODULES.get(info.type)
        if source in ("gradient", "weight", "update") and info.num_params == 0:
            return Gap("n/a", f"`{info.name}` ({info.type}) owns no parameters, so it has no {stat}.")
        if stat == "act_dead_frac" and info.activation not in DEAD_UNIT_KINDS:
            if inside:
                return self._fused(info, inside)
            return Gap("n/a", f"Dead units are counted on ReLU-like and non-negative activations only; `{info.name}` "
                       f"is a{_article(info.type)} {info.type}" + (", whose output is 0 for every sample only when "
                       "its weights are." if info.activation is None else " activation, exactly 0 at a single "
                       "input only, so no unit is silent for every sample."))
        if stat == "act_saturation" and info.activation not in SATURATING:
            if inside:
                return self._fused(info, inside)
            return Gap("n/a", f"Saturation is measured on sigmoid/tanh-like activations only; `{info.name}` is a"
                       f"{_article(info.type)} {info.type}, which has no flat region.")
        if stat == "backprop_norm" and is_functional(info):
            return Gap("n/a", f"`{info.name}` is an activation called as a function, measured where the next layer "
                       "reads it (or on the model's output); its gradient is not hooked: see the feeding layer's.")
        return None

    @staticmethod
    def _fused(info: ModuleInfo, inside: str) -> Gap:
        return Gap("fused", f"The {inside} of `{info.name}` run inside nn.{info.type}, which hooks cannot see into.")

    def _switched_off(self, info: ModuleInfo, stat: str) -> Optional[Gap]:
        return self.run_gap(stat, compiled=False)

    def run_gap(self, stat: str, compiled: bool = True) -> Optional[Gap]:
        """Why no layer at all could have `stat`, from how the run was made (options, compile, fused
        modules), or None. The rules' "not checked" notes quote the same reasons."""
        source = STATS_BY_NAME[stat].source
        if source == "activation" and not self.activations_on:
            return Gap("off", "activation statistics were switched off: watch(activations=False)")
        if source in ("gradient", "weight", "update", "backprop") and not self.gradients_on:
            return Gap("off", "gradient statistics were switched off: watch(gradients=False)")
        if stat == "update_ratio" and not self.has_optimizer:
            return Gap("no opt", "the update needs the optimizer: pass it to gradscope.watch(model, optimizer=opt)")
        if stat == "update_ratio" and not self.update_ratio_on:
            return Gap("off", "the update ratio was switched off: watch(update_ratio=False)")
        if compiled and source in ("activation", "backprop") and self.forward_unseen:
            return Gap("compile", _UNSEEN)
        if stat in ("act_dead_frac", "act_saturation"):
            why = self.activation_gap()
            return Gap("fused", why) if why is not None else None
        return None

    def _not_run(self, info: ModuleInfo, stat: str) -> Optional[Gap]:
        source = STATS_BY_NAME[stat].source
        forward_side = source in ("activation", "backprop")
        if not info.executed:
            if _any_measured(self.record, info.name, "act_eval_calls"):
                return Gap("eval", f"`{info.name}` ran only in eval mode (module.eval()) during training steps; "
                           "its calls were counted (act_eval_calls), not measured.")
            if self._sparse_recording:  # hooks run only on recorded steps: unused, or run only between them
                return Gap("between", f"`{info.name}` ran in no recorded training step ({self._chosen}): it is "
                           "unused, or ran only between recorded steps.")
            return Gap("unused", f"`{info.name}` never ran in a training forward pass.")
        if forward_side and self.forward_unseen:
            return Gap("compile", _UNSEEN)
        if self._sparse_recording and self.record.steps and not self._has_values(info.name):
            return Gap("between", f"`{info.name}` ran only between recorded steps ({self._chosen}), so no "
                       "recorded step has a value of it.")
        if source in ("gradient", "weight", "update") and info.num_params and info.trainable_params == 0:
            return Gap("frozen", f"The parameters of `{info.name}` are frozen (requires_grad=False): no gradient, "
                       "no update.")
        return None

    def _measured_but_unusable(self, info: ModuleInfo, stat: str) -> Optional[Gap]:
        series = self.record.layer_stats.get(info.name, {}).get(stat)
        if series is None:
            return None
        values, measured = column_arrays(series)
        if not measured.any():
            return None
        if self.record.skipped_steps and STATS_BY_NAME[stat].source in ("gradient", "update", "backprop"):
            skipped = np.isin(self.record.step_array(), np.asarray(self.record.skipped_steps, dtype=np.int64))
            if not (measured & ~skipped).any():
                return Gap("skipped", f"Every recorded value of {stat} of `{info.name}` is from a step GradScaler "
                           "skipped; those gradients are left out.")
        return Gap("nan", f"Measured, but every value of {stat} of `{info.name}` was NaN or Inf.")

    def _why_empty(self, info: ModuleInfo, stat: str) -> Gap:
        if not self._anywhere(stat):
            hint = how_to_record(stat)
            return Gap("absent", f"No layer of this record has a value of {stat}" + (f" ({hint})." if hint else "."))
        if info.name in self.failed:
            return Gap("failed", f"A gradscope hook failed for `{info.name}` (see the hook errors in the run notes).")
        source = STATS_BY_NAME[stat].source
        if source in ("gradient", "weight", "update", "backprop") and self.record.steps:
            return Gap("no grad", f"No gradient reached `{info.name}` at a recorded step: its output did not reach "
                       "the loss, was detached, or needed no gradient (only frozen layers before it).")
        if stat == "act_dead_frac" and _any_measured(self.record, info.name, "act_sparsity"):
            return Gap("n/a", f"The output of `{info.name}` has no unit axis (fewer than 2 dimensions), so its units "
                       "cannot be told apart.")
        return Gap("none", f"No value of {stat} for `{info.name}` reached the record (see the run notes).")

    @property
    def _chosen(self) -> str:
        return "chosen by an overhead budget" if self.record.intervals else f"every={self.interval}"

    @property
    def _sparse_recording(self) -> bool:
        return self.interval > 1 or any(n > 1 for n in self.record.intervals)

    def _has_values(self, name: str) -> bool:
        if name not in self._layers_with_values:
            self._layers_with_values[name] = _any_layer_value(self.record, name)
        return self._layers_with_values[name]

    def _anywhere(self, stat: str) -> bool:
        if stat not in self._present:
            self._present[stat] = has_stat(self.record, stat)
        return self._present[stat]

    # ---- the whole record ------------------------------------------------------------------------
    def not_measured(self) -> dict[str, dict[str, str]]:
        """{layer: {statistic: reason}} for every table statistic without a value: for the JSON record."""
        table: dict[str, dict[str, str]] = {}
        for info in self.record.modules:
            reasons = {stat: gap.reason for stat in TABLE_STATS if (gap := self.cell(info, stat)[1]) is not None}
            if reasons:
                table[info.name] = reasons
        return table

    def activation_gap(self) -> Optional[str]:
        """Why no dead-unit or saturation statistic was measured anywhere in the model, or None when some
        were, when nothing was recorded at all, or when the model has no activation these apply to."""
        record = self.record
        if not record.steps or has_stat(record, "act_dead_frac") or has_stat(record, "act_saturation"):
            return None
        if not self.activations_on:
            return "activation statistics were switched off: watch(activations=False)"
        if self.forward_unseen:
            return _UNSEEN
        return self.hidden_activations()

    def hidden_activations(self) -> Optional[str]:
        """Why a model whose only nonlinearities run inside fused modules (an nn.LSTM language model) has
        no activation statistic, or None: dead-unit and saturation checks apply to it, but see nothing."""
        record = self.record
        if not record.steps or has_stat(record, "act_dead_frac") or has_stat(record, "act_saturation"):
            return None
        fused = [m for m in record.modules if m.type in FUSED_MODULES and m.type != "MultiheadAttention"]
        if not fused or any(m.activation in DEAD_UNIT_KINDS | SATURATING for m in record.modules):
            return None
        kinds = " and ".join(dict.fromkeys(f"nn.{m.type}" for m in fused))
        names = ", ".join(f"`{m.name}`" for m in fused[:4]) + (" ..." if len(fused) > 4 else "")
        return f"the nonlinearities run inside {kinds} ({names}), which hooks cannot see into"

    def activation_note(self) -> Optional[str]:
        """The report's one line when no activation statistic could be measured anywhere."""
        why = self.activation_gap()
        return None if why is None else (
            f"Activation statistics: not measured — {why}; dead-unit and saturation checks were not run."
        )


_UNSEEN = (
    "the forward ran without gradscope's hooks (under torch.compile(fullgraph=True), or compiled before "
    "gradscope attached)"
)


def coverage(record: RunRecord) -> Coverage:
    return Coverage(record)


def legend_lines(gaps: Iterable[Gap]) -> list[tuple[str, str]]:
    """(label, what it means) for the empty cells a table shows, in LEGEND order: the cells' own reason
    where all cells of a label share one (`update_ratio was switched off: ...`), else the label's meaning."""
    reasons: dict[str, set[str]] = {}
    for gap in gaps:
        reasons.setdefault(gap.label, set()).add(gap.reason)
    return [
        (label, next(iter(reasons[label])) if len(reasons[label]) == 1 else meaning)
        for label, meaning in LEGEND.items()
        if label in reasons
    ]


def legend_text(entries: list[tuple[str, str]], width: int = 100) -> list[str]:
    """The lines under a text table that say what each word in its empty cells means: "Not
    measured, and why:" and one wrapped entry per (label, meaning) of `legend_lines`; none for none."""
    if not entries:
        return []
    pad = max(len(label) for label, _ in entries) + 2
    lines = ["Not measured, and why:"]
    for label, meaning in entries:
        lines += textwrap.wrap(
            meaning, width=width, initial_indent=f"  {label:<{pad}}", subsequent_indent=" " * (pad + 2),
            break_on_hyphens=False, break_long_words=False,
        ) or [f"  {label}"]
    return lines


def how_to_record(stat: str) -> str:
    """How `stat` gets into a record ("" when there is nothing to say)."""
    return next((hint for key, hint in HOW_TO_RECORD.items() if stat.startswith(key)), "")


def _article(word: str) -> str:
    return "n" if word[:1].lower() in "aeiou" else ""


def _any_measured(record: RunRecord, name: str, stat: str) -> bool:
    series = record.layer_stats.get(name, {}).get(stat)
    return series is not None and bool(column_arrays(series)[1].any())


def _any_layer_value(record: RunRecord, name: str) -> bool:
    return any(column_arrays(series)[1].any() for series in record.layer_stats.get(name, {}).values())
