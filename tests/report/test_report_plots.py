"""PNG figures: they decode, have their documented size, survive holes in the data, and show what the record holds."""

from __future__ import annotations

import io
import math

import matplotlib
import pytest
from matplotlib.figure import Figure
from PIL import Image

from gradscope.diagnose.finding import Diagnosis, Finding
from gradscope.errors import GradscopeError
from gradscope.record import ModuleInfo, RunRecord
from gradscope.report import plots
from gradscope.report.figures import clean_style
from gradscope.report.plots import FIGURE_SIZES, build_figures, render_figure, render_figures, write_pngs
from tests.report.records import ODD_NAME, synthetic_record, vanishing_diagnosis

ALL_STEMS = ["gradient_flow", "backprop_signal", "grad_heatmap", "activations", "update_ratio", "loss"]


def decode(png: bytes) -> Image.Image:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    image.load()  # raises on a truncated or corrupt file
    return image


def draw(stem: str, record: RunRecord, diagnosis: Diagnosis | None = None) -> Figure:
    """Draw one figure without saving it, to inspect what it plots."""
    spec = next(s for s in plots.FIGURE_SPECS if s.stem == stem)
    figure = Figure()
    with matplotlib.rc_context(rc=clean_style(plots._STYLE)):
        assert spec.draw(figure, record, diagnosis)
    return figure


@pytest.fixture
def figures(small_figures) -> dict[str, bytes]:
    return {f.stem: f.png for f in small_figures if f.png is not None}


def test_every_figure_decodes_with_its_documented_size(figures):
    assert list(figures) == ALL_STEMS
    for stem, png in figures.items():
        image = decode(png)
        assert image.size == FIGURE_SIZES[stem], stem
        assert image.mode in ("RGBA", "RGB")


def test_figures_for_a_150_layer_model(tmp_path):
    record = synthetic_record(blocks=75, steps=8, decay=0.9)
    assert len(record.layers) == 150
    paths = write_pngs(tmp_path, record, vanishing_diagnosis(record))
    assert [p.stem for p in paths] == ALL_STEMS
    for path in paths:
        assert decode(path.read_bytes()).size == FIGURE_SIZES[path.stem]
    # Readable: no more tick labels than fit, and the first layer is always labelled.
    axes = draw("backprop_signal", record).axes[0]
    labels = [t.get_text() for t in axes.get_xticklabels()]
    assert labels[0] == "net.0"
    assert len(labels) <= plots.MAX_TICK_LABELS
    ticks = set(axes.get_xticks()) | set(axes.get_xticks(minor=True))
    assert ticks == set(range(150))  # every layer keeps a tick mark, labelled or not


def test_same_record_gives_the_same_bytes_and_no_version_metadata(figures, record, diagnosis):
    # One figure drawn afresh here; test_report_html redraws them all and compares whole pages.
    assert render_figure("gradient_flow", record, diagnosis) == figures["gradient_flow"]
    for png in figures.values():
        info = decode(png).info
        assert "Software" not in info
        assert b"matplotlib" not in png


def test_user_matplotlibrc_does_not_leak_into_figures(figures, record, diagnosis):
    with matplotlib.rc_context({"axes.facecolor": "black", "figure.facecolor": "red", "font.size": 30}):
        styled = render_figure("loss", record, diagnosis)
    assert styled == figures["loss"]


def test_gradient_flow_is_log_scaled_unclipped_and_in_forward_order(record):
    axes = draw("gradient_flow", record).axes[0]
    assert axes.get_yscale() == "log"
    rms = next(line for line in axes.get_lines() if line.get_label() == "RMS of g")
    linears = [m.name for m in record.modules if m.type == "Linear"]
    expected = [0.25 ** (5 - i) * 1.2 for i in range(6)]  # median over steps of (1 + 0.1 k), k = 0..4
    assert list(rms.get_xdata()) == list(range(len(linears)))
    assert rms.get_ydata() == pytest.approx(expected)
    low, high = axes.get_ylim()
    assert low <= min(expected) and high >= 4 * 1.2  # max |g| of the last layer is visible: no fixed limit
    labels = [t.get_text() for t in axes.get_xticklabels()]
    assert labels[0] == "net.0" and labels[1] == ODD_NAME.replace("$", r"\$")  # literal, not mathtext
    bias = next(line for line in axes.get_lines() if line.get_label() == "RMS of the bias alone")
    assert bias.get_ydata() == pytest.approx([3 * g for g in expected])


def test_gradient_flow_highlights_the_layers_a_vanishing_finding_names(record, diagnosis):
    named = diagnosis.findings[0].layers
    linears = [m.name for m in record.modules if m.type == "Linear"]
    axes = draw("gradient_flow", record, diagnosis).axes[0]
    spans = [p for p in axes.patches if str(p.get_label()).startswith("vanishing-gradients")]
    assert len(spans) == 1
    box = spans[0].get_bbox()
    assert (box.x0, box.x1) == (-0.5, linears.index(named[-1]) + 0.5)
    assert not draw("gradient_flow", record, Diagnosis()).axes[0].patches


def test_holes_zeros_and_nan_in_gradients_do_not_break_the_figures():
    record = synthetic_record(blocks=4, steps=3, odd_name=False)
    record.layer_stats["net.0"]["grad_rms"] = [None, None, None]  # never received a gradient
    record.layer_stats["net.2"]["grad_rms"] = [0.0, 0.0, 0.0]  # a dead layer: exactly zero
    record.layer_stats["net.4"]["grad_rms"] = [math.nan, math.inf, 1e-3]  # blew up
    record.layer_stats["net.4"]["grad_max"] = [math.nan, 2.0, None]
    figures = render_figures(record, None)
    assert list(figures) == ALL_STEMS
    axes = draw("gradient_flow", record).axes[0]
    labels = {line.get_label(): line for line in axes.get_lines()}
    assert list(labels["NaN/Inf at some step"].get_xdata()) == [2]
    assert list(labels["gradient exactly 0"].get_xdata()) == [1]
    assert math.isnan(labels["RMS of g"].get_ydata()[0]) and math.isnan(labels["RMS of g"].get_ydata()[1])


def test_all_zero_gradients_draw_a_note_instead_of_an_empty_log_axis():
    record = synthetic_record(blocks=2, steps=2, odd_name=False)
    for stats in list(record.layer_stats.values()) + list(record.param_stats.values()):
        for stat in ("grad_rms", "grad_mean_abs", "grad_max", "update_ratio"):
            if stat in stats:
                stats[stat] = [0.0, 0.0]
    axes = draw("gradient_flow", record).axes[0]
    assert any("no finite, non-zero gradient" in t.get_text() for t in axes.texts)
    assert render_figure("gradient_flow", record) is not None
    assert render_figure("update_ratio", record) is not None


def test_absent_data_leaves_figures_out_with_a_reason():
    record = synthetic_record(blocks=3, steps=2, odd_name=False)
    for stats in record.layer_stats.values():
        for stat in ("update_ratio", "act_sparsity", "act_dead_frac", "act_saturation"):
            stats.pop(stat, None)
    record.scalars.clear()
    figures = build_figures(record)
    assert [f.stem for f in figures if f.png] == ["gradient_flow", "backprop_signal", "grad_heatmap"]
    reasons = {f.stem: f.missing for f in figures if f.png is None}
    assert "optimizer" in reasons["update_ratio"]
    assert "run.log(loss=" in reasons["loss"]
    assert "activations=True" in reasons["activations"]


def test_an_empty_record_gives_no_figures_and_no_error():
    record = RunRecord(modules=[ModuleInfo("fc", "Linear", 10, ["fc.weight", "fc.bias"], 10)])
    assert render_figures(record) == {}
    assert all(f.missing.startswith("not recorded") for f in build_figures(record))


def test_loss_figure_marks_the_best_validation_step_only_when_overfitting_is_found(record):
    overfit = Diagnosis([Finding("overfitting", "warning", "Overfitting", "m", "r")])
    marks = [line for line in draw("loss", record, overfit).axes[0].get_lines() if "best val_loss" in line.get_label()]
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [20, 20]  # val_loss is lowest at step 20
    plain = draw("loss", record, None).axes[0].get_lines()
    assert not [line for line in plain if "best val_loss" in line.get_label()]


def test_render_figure_draws_one_figure_by_name(figures, record, diagnosis):
    assert render_figure("update_ratio", record, diagnosis) == figures["update_ratio"]
    assert render_figure("loss", RunRecord()) is None
    with pytest.raises(ValueError, match="gradient_flow"):
        render_figure("nope", record)


def test_update_ratio_has_the_guide_line(record):
    lines = draw("update_ratio", record).axes[0].get_lines()
    guide = next(line for line in lines if "1e-3" in line.get_label())
    assert list(guide.get_ydata()) == [1e-3, 1e-3]


def test_heatmap_masks_missing_values_and_uses_a_log_colour_scale():
    record = synthetic_record(blocks=3, steps=4, odd_name=False)
    record.layer_stats["net.2"]["grad_rms"][1] = None
    image = draw("grad_heatmap", record).axes[0].get_images()[0]
    data = image.get_array()
    assert data.shape == (3, 4)
    assert bool(data.mask[1, 1]) and int(data.mask.sum()) == 1
    assert type(image.norm).__name__ == "LogNorm"


def test_write_pngs_writes_every_figure(tmp_path, figures, small_figures, record, diagnosis):
    paths = write_pngs(tmp_path / "figs", record, diagnosis, figures=small_figures)
    assert [p.name for p in paths] == [f"{s}.png" for s in ALL_STEMS]
    for path in paths:
        assert path.read_bytes() == figures[path.stem]
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == sorted(p.name for p in paths)  # no temp files


def test_write_pngs_into_an_impossible_folder_says_why(tmp_path, record, small_figures):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(GradscopeError, match="not a folder"):
        write_pngs(blocker, record)
    with pytest.raises(GradscopeError, match="Cannot write the figure"):
        write_pngs(blocker / "sub", record, figures=small_figures)
    assert blocker.read_text() == "not a folder"
