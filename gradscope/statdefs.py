"""The statistics gradscope records: names, exact definitions and units.

This table is the single source of truth for what a statistic means. The README, the HTML
report's glossary and `RunRecord.series` error messages all read it, so a definition is
written once.
"""

from __future__ import annotations

from dataclasses import dataclass

# Activation kinds (the names `ModuleInfo.activation` holds) grouped by what their output can do.
# Capture reads them to decide what to measure, rules to decide what to look for; both quote
# them from here, so diagnosing a saved record needs nothing torch-side.
# Exactly 0 over half their domain: units can "die".
RELU_FAMILY = frozenset({"relu", "relu6", "hardswish"})
# Never negative: the sum over a unit is 0 only when every entry is.
NONNEGATIVE = frozenset({"relu", "relu6", "sigmoid", "hardsigmoid", "softplus"})
# Flat (derivative near 0) for large inputs: see SATURATION_THRESHOLDS.
SATURATING = frozenset({"sigmoid", "tanh", "hardtanh", "hardsigmoid", "softsign"})

# Thresholds of the flat ("saturated") region of bounded activations, on the output value.
# In these regions the local derivative is below about 1/100 of its maximum, so the chain
# rule multiplies the backward signal by almost nothing.
SATURATION_THRESHOLDS: dict[str, str] = {
    "sigmoid": "output < 0.01 or > 0.99 (sigma' < 0.0099, at most 1/4 elsewhere)",
    "tanh": "|output| > 0.99 (tanh' < 0.02)",
    "hardtanh": "output <= min_val or >= max_val (derivative exactly 0)",
    "hardsigmoid": "output <= 0 or >= 1 (derivative exactly 0)",
    "softsign": "|output| > 0.9 (softsign' < 0.01)",
}


@dataclass(frozen=True)
class StatDef:
    name: str
    source: str  # "gradient" | "weight" | "update" | "activation" | "backprop"
    definition: str
    per_param: bool = False  # also recorded per parameter (qualified parameter name)


STATS: tuple[StatDef, ...] = (
    StatDef("grad_norm", "gradient", "L2 norm of the gradient, ||g||_2, over weight and bias together.", True),
    StatDef("grad_rms", "gradient", "Root mean square of the gradient, ||g||_2 / sqrt(numel).", True),
    StatDef(
        "grad_norm_preclip",
        "gradient",
        "L2 norm of the gradient as the step's last backward left it, before anything between backward() and "
        "optimizer.step() (clip_grad_norm_, clip_grad_value_, a framework's gradient clipping) changed it; "
        "divided by the loss scale when watch is given scaler=. Needs the optimizer.",
        True,
    ),
    StatDef(
        "clip_factor",
        "gradient",
        "grad_norm / grad_norm_preclip: the factor by which the gradient was scaled between the last backward "
        "and the optimizer step; 1 when nothing clipped it, 0.1 when clipping cut it to a tenth.",
        True,
    ),
    StatDef("grad_mean_abs", "gradient", "Mean absolute gradient, sum|g| / numel."
            " Estimated on a sample for large tensors (see gradscope.measure.SAMPLING_NOTE).", True),
    StatDef("grad_max", "gradient", "Largest absolute gradient entry, max|g|.", True),
    StatDef(
        "grad_nonfinite",
        "gradient",
        "Number of NaN/Inf gradient entries (counted exactly, but only on steps where the norm is not finite).",
        True,
    ),
    StatDef("grad_zero_frac", "gradient", "Fraction of gradient entries that are exactly 0."
            " Estimated on a sample for large tensors (see gradscope.measure.SAMPLING_NOTE).", True),
    StatDef("weight_norm", "weight", "L2 norm of the parameters before the optimizer step, ||w||_2.", True),
    StatDef(
        "update_ratio",
        "update",
        "||w_after - w_before||_2 / ||w_before||_2 across the optimizer step (needs the optimizer)."
        " Estimated on a sample for large tensors (see gradscope.measure.SAMPLING_NOTE).",
        True,
    ),
    StatDef("act_sparsity", "activation", "Fraction of output entries that are exactly 0."
            " Estimated on a sample for large tensors (see gradscope.measure.SAMPLING_NOTE)."),
    StatDef("act_mean", "activation", "Mean of the output entries."),
    StatDef(
        "act_std",
        "activation",
        "Standard deviation of the output entries (population)."
        " Estimated on a sample for large tensors (see gradscope.measure.SAMPLING_NOTE).",
    ),
    StatDef(
        "act_dead_frac",
        "activation",
        "Fraction of units (last dim of a Linear-like output, channel dim 1 of a conv-like output) that were 0 "
        "for every sample of every training batch since the previous recorded step. Measured on the outputs of "
        "ReLU-family and other non-negative activation modules (ReLU, ReLU6, Hardswish, Sigmoid, Hardsigmoid, "
        "Softplus); None elsewhere, since a Linear or Conv output is 0 for every sample only when its weights are.",
    ),
    StatDef(
        "act_saturation",
        "activation",
        "Fraction of outputs of a Sigmoid/Tanh/Hardtanh/Hardsigmoid/Softsign module in its flat region "
        "(thresholds in gradscope.statdefs.SATURATION_THRESHOLDS); None for other modules."
        " Estimated on a sample for large tensors (see gradscope.measure.SAMPLING_NOTE).",
    ),
    StatDef("act_nonfinite", "activation", "1 if any output entry in the window was NaN or Inf, else 0."),
    StatDef("act_calls", "activation", "Training forward calls of the module in the window (reused modules count each call)."),
    StatDef("act_batch", "activation", "Mean size of the output's first dimension (the batch) per call."),
    StatDef(
        "act_eval_calls",
        "activation",
        "Forward calls with gradients enabled while this module was in eval mode (e.g. a frozen BatchNorm).",
    ),
    StatDef(
        "backprop_norm",
        "backprop",
        "L2 norm of dLoss/d(output of the module): the signal the chain rule carries backwards. "
        "Several calls or micro-batches in one step add in quadrature.",
    ),
)

STAT_NAMES: tuple[str, ...] = tuple(s.name for s in STATS)
GRADIENT_STAT_NAMES: tuple[str, ...] = tuple(s.name for s in STATS if s.source in ("gradient", "weight", "update"))
ACTIVATION_STAT_NAMES: tuple[str, ...] = tuple(s.name for s in STATS if s.source == "activation")
STATS_BY_NAME: dict[str, StatDef] = {s.name: s for s in STATS}
