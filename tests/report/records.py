"""Run records and diagnoses for the report tests (fixtures in conftest.py).

`synthetic_record` builds a RunRecord by hand in the documented format: a deep stack of
Linear -> Sigmoid blocks whose gradient shrinks by a constant factor per block towards the
input, the picture of vanishing gradients. Every number is known in advance, so tests can
check that what the report shows is what the record holds.
"""

from __future__ import annotations

import math

from gradscope.diagnose.finding import Diagnosis, Finding
from gradscope.record import ModuleInfo, RunMeta, RunRecord

ODD_NAME = 'a<b&"c$x$'  # HTML and mathtext specials: must come out escaped / literal


def synthetic_record(blocks: int = 6, steps: int = 5, decay: float = 0.25, odd_name: bool = True) -> RunRecord:
    """`blocks` Linear+Sigmoid pairs (2*blocks layers); block i's gradient RMS is decay**(blocks-1-i)."""
    modules = []
    for i in range(blocks):
        linear = ODD_NAME if (odd_name and i == 1) else f"net.{2 * i}"
        modules.append(
            ModuleInfo(linear, "Linear", 16 * 16 + 16, [f"{linear}.weight", f"{linear}.bias"], 16 * 16 + 16)
        )
        modules.append(ModuleInfo(f"net.{2 * i + 1}", "Sigmoid", 0, [], 0, activation="sigmoid"))
    record = RunRecord(
        meta=RunMeta(
            model_class="DeepSigmoidNet",
            num_params=blocks * (16 * 16 + 16),
            trainable_params=blocks * (16 * 16 + 16),
            optimizer="SGD",
            gradscope_version="0.1.0",
            torch_version="2.x",
            python_version="3.11",
            options={"lr": 0.1, "depth": blocks, "note": "<script>alert(1)</script>"},
            notes=["act_saturation is only defined for bounded activations"],
        ),
        modules=modules,
    )
    for k in range(steps):
        step = 10 * k
        layer_values = {}
        param_values = {}
        for i in range(blocks):
            linear, act = modules[2 * i].name, modules[2 * i + 1].name
            g = decay ** (blocks - 1 - i) * (1.0 + 0.1 * k)
            layer_values[linear] = {
                "grad_rms": g,
                "grad_mean_abs": 0.8 * g,
                "grad_max": 4.0 * g,
                "grad_norm": g * math.sqrt(272),
                "update_ratio": 0.1 * g,
                "act_sparsity": 0.0,
                "act_dead_frac": 0.0,
                "backprop_norm": 2.0 * g,
            }
            layer_values[act] = {
                "act_sparsity": 0.0,
                "act_dead_frac": 0.0,
                "act_saturation": min(1.0, 0.05 * i + 0.02 * k),
                "backprop_norm": 2.0 * g / decay,
            }
            param_values[f"{linear}.weight"] = {"grad_rms": g, "grad_mean_abs": 0.8 * g, "grad_max": 4.0 * g}
            param_values[f"{linear}.bias"] = {"grad_rms": 3 * g, "grad_mean_abs": 2.5 * g, "grad_max": 6.0 * g}
        record.append_step(step, layer_values, param_values)
        record.log_scalar(step, "loss", 2.0 / (1 + k))
        record.log_scalar(step, "val_loss", 2.2 / (1 + k) + 0.2 * max(0, k - 2))
    return record


def vanishing_diagnosis(record: RunRecord) -> Diagnosis:
    """Findings as the rules would write them (hand-made: the reports must not depend on the rules)."""
    first_half = [m.name for m in record.modules if m.type == "Linear"][: max(1, len(record.modules) // 4)]
    return Diagnosis(
        [
            Finding(
                code="vanishing-gradients",
                severity="error",
                title="Gradients vanish towards the input (x0.25 per layer)",
                message=f"The gradient of {first_half[0]} is tiny compared with the last layer.",
                recommendation="Replace nn.Sigmoid with nn.ReLU, or add nn.BatchNorm1d after each Linear.",
                snippet="layers += [nn.Linear(16, 16), nn.BatchNorm1d(16), nn.ReLU()]\n# a < b && c > d",
                layers=first_half,
                steps=list(record.steps),
                evidence={"ratio_per_layer": 0.25, "threshold": 0.5, "layers": len(first_half)},
            ),
            Finding(
                code="overfitting",
                severity="warning",
                title="Validation loss rises while training loss falls",
                message="val_loss is lowest at step 20 and rises afterwards.",
                recommendation="Stop early, add weight decay or dropout.",
                evidence={"best_step": 20},
            ),
            Finding(
                code="sigmoid-saturation",
                severity="info",
                title=f"Some sigmoid outputs saturate in {ODD_NAME}",
                message="A few outputs sit in the flat region.",
                recommendation="Consider ReLU.",
            ),
        ]
    )
