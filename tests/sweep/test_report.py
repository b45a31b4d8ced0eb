"""Sweep figures and the sweep HTML page, from a real (small) sweep."""

from __future__ import annotations

import html
import re

import pytest

import gradscope
from gradscope.errors import OutputError
from gradscope.report.sweep_html import render_sweep_html, write_sweep_html
from gradscope.report.sweep_plots import build_sweep_figures, render_sweep_figures, write_sweep_pngs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def result():
    return gradscope.sweep(activations=("sigmoid", "relu"), depths=(2, 4), norms=("none", "batchnorm"), steps=3, workers=1)


@pytest.fixture(scope="module")
def figures(result):
    return build_sweep_figures(result)


def test_every_figure_is_drawn_as_a_png(figures):
    assert [f.stem for f in figures] == ["backprop_by_layer", "ratio_heatmap", "training_curves", "relu_sparsity"]
    for figure in figures:
        assert figure.png.startswith(PNG_MAGIC) and len(figure.png) > 5000
        assert figure.reading


def test_relu_sparsity_is_left_out_without_relu_and_says_why():
    no_relu = gradscope.sweep(activations=("tanh",), depths=(2,), steps=1, workers=1)
    by_stem = {f.stem: f for f in build_sweep_figures(no_relu)}
    assert by_stem["relu_sparsity"].png is None and "no ReLU" in by_stem["relu_sparsity"].missing
    assert by_stem["ratio_heatmap"].png is not None
    assert "relu_sparsity" not in render_sweep_figures(no_relu)


def test_write_pngs_into_a_new_folder_and_refuse_a_file(result, figures, tmp_path):
    written = write_sweep_pngs(tmp_path / "figs", result, figures)
    assert sorted(p.name for p in written) == sorted(f"sweep_{f.stem}.png" for f in figures)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        write_sweep_pngs(tmp_path / "file", result, figures)


def test_html_page_has_table_figures_and_reading(result, figures, tmp_path):
    page = render_sweep_html(result, figures=figures)
    assert page.startswith("<!DOCTYPE html>") or page.lstrip().lower().startswith("<!doctype html>")
    for anchor in ("reading", "results", "figures", "setup"):
        assert f'id="{anchor}"' in page
    assert page.count("data:image/png;base64,") == len(figures)
    assert page.count("<tr") >= 1 + len(result.summaries)  # header + one row per configuration
    assert "BatchNorm at depth 4 (PyTorch's default init) changes the first/last ratio" in html.unescape(page)
    assert not re.search(r"""(src|href)=["']https?://""", page)  # loads nothing from the network
    path = write_sweep_html(tmp_path / "out" / "sweep.html", result, figures=figures)
    assert path.read_text(encoding="utf-8") == page


def test_user_text_is_escaped(result, figures):
    result.data_description = "<script>alert(1)</script>"
    try:
        page = render_sweep_html(result, title="<b>mine</b>", figures=figures)
    finally:
        result.data_description = ""
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>mine</b>" not in page
