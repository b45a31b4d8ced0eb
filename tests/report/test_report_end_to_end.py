"""A real watched training run, diagnosed by the real rules, reported as PNGs and HTML."""

from __future__ import annotations

import io

import torch
from PIL import Image
from torch import nn

import gradscope
from gradscope.report.html import write_html
from gradscope.report.plots import FIGURE_SIZES, build_figures, write_pngs
from tests.models import mlp
from tests.report.htmlparse import parse


def train_deep_sigmoid_net(steps: int = 6):
    """Ten sigmoid layers: the seed lecture's vanishing-gradient example, small enough for a test."""
    model = mlp(widths=(16,) + (16,) * 10 + (4,), activation=nn.Sigmoid)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(64, 16), torch.randint(0, 4, (64,))
    x_val, y_val = torch.randn(32, 16), torch.randint(0, 4, (32,))
    with gradscope.watch(model, optimizer=optimizer) as run:
        for step in range(steps):
            batch = slice(16 * (step % 4), 16 * (step % 4) + 16)
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                val_loss = nn.functional.cross_entropy(model(x_val), y_val)
            run.log(loss=loss.item(), val_loss=val_loss.item())
    return run.record


def test_watched_run_to_pngs_and_html(tmp_path):
    record = train_deep_sigmoid_net()
    diagnosis = gradscope.diagnose(record)
    assert "vanishing-gradients" in diagnosis.codes()

    figures = build_figures(record, diagnosis)
    pngs = write_pngs(tmp_path / "figures", record, diagnosis, figures=figures)
    assert [p.stem for p in pngs] == list(FIGURE_SIZES)  # a full run records everything every figure needs
    for path in pngs:
        image = Image.open(io.BytesIO(path.read_bytes()))
        image.load()
        assert image.size == FIGURE_SIZES[path.stem]

    report = write_html(tmp_path / "report.html", record, diagnosis, figures=figures)
    page = parse(report.read_text(encoding="utf-8"))
    assert page.unbalanced == []
    assert len(page.body_rows["layers"]) == len(record.layers) == 21
    assert [row[1] for row in page.body_rows["layers"]] == record.layers
    assert diagnosis.findings[0].title in page.section_text["verdict"]
    assert all(f.title in page.section_text["findings"] for f in diagnosis)
    assert "Sequential" in page.section_text["run"] and record.meta.torch_version in page.section_text["run"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures", "report.html"]  # no temporary files left
