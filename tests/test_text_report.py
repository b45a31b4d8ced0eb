"""The terminal report: per-layer table in forward order, findings by severity, golden files."""

from __future__ import annotations

import os
import re
import statistics
from pathlib import Path

import torch
from torch import nn

import gradscope
from gradscope.record import ModuleInfo, RunMeta, RunRecord
from gradscope.report import text as report_text
from gradscope.report.text import render_text, shorten_left
from tests.diagnose.builders import batches, classification_data, stack, train

GOLDEN = Path(__file__).parent / "golden"
LONG = "encoder.blocks.0.attention_projection_with_a_really_long_name"


def scrub(text: str) -> str:
    """Versions and dates change from run to run; the rest must not."""
    return re.sub(r"gradscope \S+, torch \S+, created \S+", "gradscope <version>, torch <version>, created <date>", text)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    text = scrub(text)
    if os.environ.get("GRADSCOPE_REGEN_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"{name} differs; if the change is intended, rerun with GRADSCOPE_REGEN_GOLDEN=1"


def hand_built_record() -> RunRecord:
    """A deterministic record (no torch numerics) that makes several rules fire at once."""
    modules = [
        ModuleInfo(LONG, "Linear", 272, [f"{LONG}.weight", f"{LONG}.bias"], 272),
        ModuleInfo("encoder.blocks.0.act", "Sigmoid", 0, activation="sigmoid"),
        ModuleInfo("encoder.blocks.1.fc", "Linear", 272, ["encoder.blocks.1.fc.weight", "encoder.blocks.1.fc.bias"], 272),
        ModuleInfo("encoder.blocks.1.act", "ReLU", 0, activation="relu"),
        ModuleInfo("encoder.blocks.2.fc", "Linear", 272, ["encoder.blocks.2.fc.weight", "encoder.blocks.2.fc.bias"], 272),
        ModuleInfo("encoder.blocks.2.act", "Sigmoid", 0, activation="sigmoid"),
        ModuleInfo("head", "Linear", 68, ["head.weight", "head.bias"], 68),
        ModuleInfo("spare", "Linear", 20, ["spare.weight", "spare.bias"], 20, executed=False),
    ]
    record = RunRecord(
        meta=RunMeta(model_class="Encoder", num_params=904, trainable_params=904, grad_source="optimizer",
                     optimizer="SGD", every=1, gradscope_version="9.9.9", torch_version="1.2.3",
                     created="2000-01-01T00:00:00+00:00", options={"update_ratio": False}),
        modules=modules,
    )
    signal = {LONG: 1e-7, "encoder.blocks.1.fc": 1e-5, "encoder.blocks.2.fc": 1e-3, "head": 0.1}
    for step in range(6):
        layers = {}
        params = {}
        for name, value in signal.items():
            layers[name] = {"backprop_norm": value, "grad_rms": value / 10, "grad_norm": value, "act_sparsity": 0.0,
                            "act_calls": 1.0, "act_batch": 32.0, "act_nonfinite": 0.0}
            params[f"{name}.weight"] = {"grad_norm": value}
            params[f"{name}.bias"] = {"grad_norm": value / 2}
        layers["encoder.blocks.0.act"] = {"act_saturation": 0.02, "act_dead_frac": 0.0, "act_sparsity": 0.0,
                                          "backprop_norm": 4e-7}
        layers["encoder.blocks.1.act"] = {"act_dead_frac": 0.75, "act_sparsity": 0.8, "backprop_norm": 4e-5}
        layers["encoder.blocks.2.act"] = {"act_saturation": 0.01, "act_dead_frac": 0.0, "act_sparsity": 0.0,
                                          "backprop_norm": 4e-3}
        record.append_step(step, layers, params, skipped=(step == 5))
        record.log_scalar(step, "loss", 2.0 - 0.3 * step)
        record.log_scalar(step, "val_loss", [2.0, 1.8, 1.9, 2.1, 2.3, 2.6][step])
    return record


def test_golden_report_of_a_hand_built_record():
    record = hand_built_record()
    diagnosis = gradscope.diagnose(record)
    assert diagnosis.codes()[:1] == ["vanishing-gradients"]
    check_golden("text_report.txt", render_text(record, diagnosis))


def test_golden_report_narrow_and_without_findings():
    record = hand_built_record()
    check_golden("text_report_90_no_findings.txt", render_text(record, gradscope.Diagnosis(), width=90))


def test_table_fits_the_width_and_shortens_long_names_from_the_left():
    record = hand_built_record()
    for width in (100, 90):
        text = render_text(record, gradscope.diagnose(record), width=width)
        table = text.split("\n\n")[1].splitlines()
        assert max(len(line) for line in table) <= width
        truncated = [line for line in table if "…" in line]
        shown = truncated[0].split()[1]
        assert shown.startswith("…") and LONG.endswith(shown[1:])  # the end kept whole, never cut in the middle
    prose = [line for line in render_text(record, gradscope.diagnose(record)).splitlines() if not line.startswith("      ")]
    assert max(len(line) for line in prose) <= 100  # snippet lines (indented code) aside


def test_names_are_shortened_from_the_left_at_a_dot():
    assert shorten_left("transformer.h.3.attn.c_proj", 17) == "…h.3.attn.c_proj"
    assert shorten_left("transformer.h.3.attn.c_proj", 40) == "transformer.h.3.attn.c_proj"
    assert shorten_left("averyveryverylongname", 8) == "…ongname"


def test_header_counts_findings_not_the_not_checked_notes():
    record = hand_built_record()
    diagnosis = gradscope.diagnose(record)
    skipped = sum(f.code == "rule-skipped" for f in diagnosis)
    info = sum(f.severity == "info" and f.code != "rule-skipped" for f in diagnosis)
    assert skipped == 1
    assert f"{info} info ({skipped} not checked)" in render_text(record, diagnosis)


def test_report_of_a_real_watched_model(capsys):
    torch.manual_seed(0)
    model = stack([16] + [32] * 9 + [4], nn.Sigmoid)
    record = train(model, batches(*classification_data(128), 32, 3))
    diagnosis = gradscope.diagnose(record)
    text = report_text(record, diagnosis)
    assert capsys.readouterr().out == ""  # returns, never prints
    table = text.split("\n\n")[1].splitlines()
    first, legend = table.index(next(line for line in table if line.startswith("--"))) + 1, table.index("Not measured, and why:")
    rows = [line.split() for line in table[first:legend]]
    names = [row[1] if row[0] in ("E", "W") else row[0] for row in rows]
    assert names == [str(i) for i in range(19)]  # forward order, every module with statistics
    assert rows[0][0] == "E"  # the first Linear is named in the vanishing-gradients error
    # the table shows the numbers the findings quote: medians over the recorded steps
    median_rms = statistics.median(record.series("grad_rms", "18"))
    assert f"{median_rms:.3g}" in table[legend - 1]
    finding = next(f for f in diagnosis if f.code == "vanishing-gradients")
    assert finding.evidence["grad_rms_per_layer"]["18"] == median_rms
    assert text.index("ERROR (1)") < text.index("[vanishing-gradients]") < text.index("WARNING")


def test_text_is_the_same_function():
    assert report_text is render_text
