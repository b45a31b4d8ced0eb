"""Never a silent "-": every statistic a report's table cannot show says why, in the text table, the
HTML report, the JSON record and the rules' "not checked" notes alike, on real watched models."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from torch import nn

import gradscope
from gradscope.capture import meta
from gradscope.diagnose.coverage import LEGEND, TABLE_STATS, coverage
from gradscope.outputs import record_json
from gradscope.record import RunRecord
from gradscope.report.html import render_html
from gradscope.report.text import render_text
from tests.diagnose.builders import batches, classification_data, train
from tests.report.htmlparse import parse


class Mixed(nn.Module):
    """A frozen first layer, a ReLU module, a functional tanh, an unused layer and a ModuleDict name that
    needs escaping: one cell of every common kind."""

    def __init__(self):
        super().__init__()
        self.frozen = nn.Linear(16, 16).requires_grad_(False)
        self.fc = nn.Linear(16, 16)
        self.act = nn.ReLU()
        self.parts = nn.ModuleDict({"<b>odd</b>": nn.Linear(16, 16)})
        self.head = nn.Linear(16, 4)
        self.spare = nn.Linear(16, 4)

    def forward(self, x):
        h = self.act(self.fc(self.frozen(x)))
        return self.head(torch.tanh(self.parts["<b>odd</b>"](h)))


def _mixed_record(**options) -> RunRecord:
    torch.manual_seed(0)
    return train(Mixed(), batches(*classification_data(64), 32, 2), **options)


def _gaps(record: RunRecord) -> dict[tuple[str, str], tuple[str, str]]:
    cover = coverage(record)
    cells = {(m.name, stat): cover.cell(m, stat) for m in record.modules for stat in TABLE_STATS}
    return {key: (gap.label, gap.reason) for key, (value, gap) in cells.items() if gap is not None}


def test_each_empty_cell_says_why_and_measured_cells_say_nothing():
    record = _mixed_record()
    gaps = _gaps(record)
    assert gaps[("act", "grad_rms")][0] == "n/a" and "owns no parameters" in gaps[("act", "grad_rms")][1]
    assert gaps[("fc", "act_saturation")][0] == "n/a" and "Linear" in gaps[("fc", "act_saturation")][1]
    assert gaps[("fc", "act_dead_frac")][0] == "n/a"
    assert gaps[("act", "act_saturation")][0] == "n/a"  # a ReLU has no flat region
    assert gaps[("frozen", "grad_rms")][0] == "frozen" and gaps[("frozen", "update_ratio")][0] == "frozen"
    assert gaps[("frozen", "backprop_norm")][0] == "no grad"  # nothing before it needs a gradient
    assert {gaps[("spare", stat)][0] for stat in ("grad_rms", "backprop_norm", "act_sparsity")} == {"unused"}
    assert gaps[("parts.<b>odd</b>→tanh", "backprop_norm")][0] == "n/a"  # a function's gradient is not hooked
    for measured in [("fc", "grad_rms"), ("act", "act_dead_frac"), ("parts.<b>odd</b>→tanh", "act_saturation")]:
        assert measured not in gaps
    assert all(label in LEGEND and reason.endswith(".") for label, reason in gaps.values())


def test_switched_off_statistics_and_no_optimizer_say_so():
    record = _mixed_record(activations=False)
    gaps = _gaps(record)
    assert gaps[("act", "act_dead_frac")] == ("off", "Activation statistics were switched off: watch(activations=False).")
    assert gaps[("fc", "act_sparsity")][0] == "off" and ("fc", "grad_rms") not in gaps
    skipped = {f.evidence["rule"]: f.message for f in gradscope.diagnose(record) if f.code == "rule-skipped"}
    assert "switched off: watch(activations=False)" in skipped["dead_relu"]

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    with gradscope.watch(model, gradients=False) as run:  # no optimizer, gradients off
        for _ in range(2):
            model(torch.randn(4, 8)).sum().backward()
    gaps = _gaps(run.record)
    assert gaps[("0", "grad_rms")][0] == "off" and gaps[("0", "update_ratio")][0] == "off"
    with gradscope.watch(model) as run:
        for _ in range(2):
            model(torch.randn(4, 8)).sum().backward()
    assert _gaps(run.record)[("0", "update_ratio")] == (
        "no opt", "The update needs the optimizer: pass it to gradscope.watch(model, optimizer=opt).")


class LSTMModel(nn.Module):
    """An LSTM language model in miniature: its only nonlinearities run inside nn.LSTM."""

    def __init__(self):
        super().__init__()
        self.embed, self.rnn, self.out = nn.Embedding(20, 8), nn.LSTM(8, 8, batch_first=True), nn.Linear(8, 20)

    def forward(self, tokens):
        return self.out(self.rnn(self.embed(tokens))[0]).flatten(0, 1)


def _lstm_record() -> RunRecord:
    torch.manual_seed(0)
    data = [(torch.randint(0, 20, (4, 6)), torch.randint(0, 20, (24,))) for _ in range(2)]
    return train(LSTMModel(), data)


def test_a_model_whose_activations_all_run_inside_an_lstm_gets_one_note_and_matching_not_checked_notes():
    record = _lstm_record()
    assert _gaps(record)[("rnn", "act_saturation")] == (
        "fused", "The sigmoid gates and tanh of `rnn` run inside nn.LSTM, which hooks cannot see into.")
    note = coverage(record).activation_note()
    assert note == ("Activation statistics: not measured — the nonlinearities run inside nn.LSTM (`rnn`), which "
                    "hooks cannot see into; dead-unit and saturation checks were not run.")
    diagnosis = gradscope.diagnose(record)
    skipped = {f.evidence["rule"]: f.message for f in diagnosis if f.code == "rule-skipped"}
    because = "because the nonlinearities run inside nn.LSTM (`rnn`), which hooks cannot see into."
    assert skipped["dead_relu"] == "Dead ReLU units were not checked " + because
    assert skipped["saturation"] == "Saturated activations were not checked " + because
    text = render_text(record, diagnosis)
    assert "Activation statistics: not measured — the nonlinearities run inside nn.LSTM" in " ".join(text.split())
    data = json.loads(record_json(record, diagnosis))
    assert data["not_measured_note"] == note and data["not_measured"]["rnn"]["act_dead_frac"].startswith("The sigmoid")
    assert RunRecord.from_dict(data).layers == record.layers  # the extra keys do not disturb loading


def test_a_model_with_activations_it_can_see_gets_no_note_and_no_extra_not_checked():
    record = _mixed_record()
    assert coverage(record).activation_note() is None
    rules = {f.evidence["rule"] for f in gradscope.diagnose(record) if f.code == "rule-skipped"}
    assert "dead_relu" not in rules and "saturation" not in rules


def test_the_text_table_has_no_dash_and_a_legend_for_the_words_it_shows():
    record = _mixed_record()
    text = render_text(record, gradscope.diagnose(record), width=100)
    block = text.split("\n\n")[1].splitlines()
    legend = block.index("Not measured, and why:")
    rows = block[legend - len(record.modules):legend]
    assert [row.split()[-6:] for row in rows if " spare " in row] == [["unused"] * 4 + ["n/a"] * 2]
    assert not [row for row in rows if " - " in row or row.endswith(" -")]
    words = {line.split()[0] for line in block[legend + 1:] if not line.startswith("   ")}
    assert words == {"n/a", "frozen", "no", "unused"}  # "no grad"
    assert max(len(line) for line in block) <= 100


def test_the_html_cells_carry_their_reason_escaped_and_the_json_lists_every_reason():
    record = _mixed_record()
    diagnosis = gradscope.diagnose(record)
    document = render_html(record, diagnosis, figures=[])  # the table is the point, not the figures
    page = parse(document)
    assert "<b>odd</b>" not in document and "&lt;b&gt;odd&lt;/b&gt;" in document
    titles = [a["title"] for a in page.attrs("td") if "none" in a.get("class", "") and "title" in a]
    assert "`parts.<b>odd</b>→tanh` is an activation called as a function, measured where the next layer reads it " \
           "(or on the model's output); its gradient is not hooked: see the feeding layer's." in titles
    assert "Not measured, and why" in page.section_text["layers"]
    spare = next(row for row in page.body_rows["layers"] if row[1] == "spare")
    assert spare[4:11] == ["unused", "unused", "unused", "unused", "unused", "n/a", "n/a"]
    not_measured = json.loads(record_json(record, diagnosis))["not_measured"]
    assert not_measured["spare"]["grad_rms"] == "`spare` never ran in a training forward pass."
    assert "act_sparsity" not in not_measured["fc"]  # measured: nothing to explain


def test_layers_seen_only_between_recorded_steps_eval_mode_and_unseen_forwards():
    class Sometimes(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.extra, self.norm, self.head = nn.Linear(8, 8), nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 2)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            h = F.relu(self.fc(x))
            if self.calls % 2 == 0:  # only on odd steps: never a recorded one with every=2
                h = self.extra(h)
            return self.head(self.norm(h))

    torch.manual_seed(0)
    model = Sometimes()
    model.norm.eval()  # frozen statistics: runs in eval mode while the rest trains
    data = [(torch.randn(8, 8), torch.randint(0, 2, (8,))) for _ in range(4)]
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with gradscope.watch(model, optimizer=opt, every=2) as run:
        for x, y in data:
            model.fc.train(), model.head.train(), model.extra.train()
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    record = run.record
    gaps = _gaps(record)
    assert record.steps == [0, 2]
    assert gaps[("extra", "grad_rms")][0] == "between" and "every=2" in gaps[("extra", "grad_rms")][1]
    assert gaps[("norm", "act_sparsity")][0] == "eval"

    record.meta.notes.append(meta.unseen_forward_note(fullgraph=True))  # as a fullgraph-compiled run writes it
    record.layer_stats["fc"] = {k: v for k, v in record.layer_stats["fc"].items() if not k.startswith(("act_", "back"))}
    assert _gaps(record)[("fc", "act_sparsity")][0] == "compile"


def test_compare_says_why_as_the_report_does():
    from gradscope.compare import compare_runs, render_comparison

    a, b = _mixed_record(), _mixed_record(activations=False)
    text = render_comparison(compare_runs(a, b, gradscope.diagnose(a), gradscope.diagnose(b)))
    row = next(line for line in text.splitlines() if line.startswith("act "))
    assert row.split()[-6:] == ["0%", "->", "off", "n/a", "->", "n/a"]
    assert "  off      Switched off for this run" in text and "Not measured, and why:" in text
    assert "parts.<b>odd</b>→tanh F.tanh  -" in text  # no such layer in B: a dash, said in the header
