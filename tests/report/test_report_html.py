"""The HTML report, read back with html.parser: sections, one table row per layer, nothing external, escaping."""

from __future__ import annotations

import base64
import io
import re

import pytest
from PIL import Image

from gradscope.diagnose.finding import Diagnosis, Finding
from gradscope.errors import GradscopeError
from gradscope.record import RunRecord
from gradscope.report.html import Figure, Markup, Section, Table, render_html, render_page, write_html
from gradscope.report.page import build_report_page
from gradscope.report.plots import FIGURE_SIZES
from tests.report.htmlparse import parse
from tests.report.records import ODD_NAME, synthetic_record, vanishing_diagnosis

SECTIONS = ["verdict", "findings", "figures", "layers", "run"]


@pytest.fixture
def document(small_document) -> str:
    return small_document


def test_sections_in_reading_order_and_well_formed(document):
    page = parse(document)
    assert page.sections == SECTIONS
    assert page.unbalanced == []
    assert document.startswith("<!DOCTYPE html>")
    nav = [a["href"] for a in page.attrs("a") if a.get("href", "").startswith("#")][: len(SECTIONS)]
    assert nav == [f"#{s}" for s in SECTIONS]


def test_one_table_row_per_layer_in_forward_order(document):
    record = synthetic_record()
    rows = parse(document).body_rows["layers"]
    assert len(rows) == len(record.layers) == 12
    assert [row[1] for row in rows] == record.layers  # module names, forward order (ODD_NAME unescaped by the parser)
    assert [row[0] for row in rows] == [str(i) for i in range(12)]
    # net.0 is the first Linear: grad RMS median = 0.25**5 * 1.2 (see records.py)
    assert rows[0][4] == "0.001172"
    assert "vanishing-gradients" in rows[0][-1]


def test_nothing_is_loaded_from_the_network(document):
    page = parse(document)
    for tag, attrs in page.tags:
        for name in ("src", "href", "srcset", "poster", "data", "action"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith(("data:", "#")), f"<{tag} {name}={value[:60]!r}>"
    assert not [t for t, _ in page.tags if t in ("link", "iframe", "object", "embed", "base")]
    assert "http://" not in document and "https://" not in document
    assert "url(" not in document  # no CSS fetches either
    assert page.attrs("script") == [{}]  # one inline script, no src


def test_every_image_is_an_inline_png_of_the_figure_size(document):
    images = parse(document).attrs("img")
    assert len(images) == len(FIGURE_SIZES)
    sizes = []
    for attrs in images:
        src = attrs["src"]
        assert src.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        image.load()
        sizes.append(image.size)
        assert attrs["alt"]
    assert sizes == list(FIGURE_SIZES.values())


def test_user_controlled_strings_are_escaped(document):
    assert ODD_NAME not in document
    assert "a&lt;b&amp;&quot;c$x$" in document
    assert "<script>alert(1)</script>" not in document  # an option value
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in document
    assert document.count("<script") == 1
    assert "# a &lt; b &amp;&amp; c &gt; d" in document  # inside the snippet's <pre>


def test_verdict_names_the_most_severe_finding(document):
    verdict = parse(document).section_text["verdict"]
    assert "1 error, 1 warning and 1 note" in verdict
    assert "Gradients vanish towards the input" in verdict
    assert "Validation loss" not in verdict  # only the most severe are named
    assert 'class="block verdict sev-error"' in document


def test_verdict_without_problems_and_without_diagnosis(record):
    notes_only = Diagnosis([Finding("note", "info", "A remark", "m", "r")])
    only_notes = parse(render_html(record, notes_only, figures=[]))
    assert "No problems found. 1 note below." in only_notes.section_text["verdict"]
    undiagnosed = parse(render_html(record, None, figures=[]))
    assert "No diagnosis was run" in undiagnosed.section_text["verdict"]
    assert "nothing to report" in undiagnosed.section_text["findings"]


def test_findings_show_severity_evidence_recommendation_and_snippet(document):
    page = parse(document)
    text = page.section_text["findings"]
    for expected in ("error", "Gradients vanish towards the input (x0.25 per layer)", "What to change:",
                     "Replace nn.Sigmoid with nn.ReLU", "ratio_per_layer", "0.25", "threshold",
                     "warning", "Validation loss rises", "info", "[overfitting]", "steps 0\u201340 (5 recorded)"):
        assert expected in text, expected
    assert len(page.attrs("pre")) == 1
    assert re.search(r"<pre><code>layers \+= \[nn\.Linear", document)
    articles = [a for a in page.attrs("article")]
    assert [a["class"] for a in articles] == ["finding sev-error", "finding sev-warning", "finding sev-info"]


def test_run_metadata(document):
    text = parse(document).section_text["run"]
    for expected in ("DeepSigmoidNet", "1,632", "5 (0\u201340, every 1)", "SGD", "2.x", "3.11", "0.1.0",
                     "lr", "depth", "act_saturation is only defined"):
        assert expected in text, expected


def test_clean_run_without_loss_or_optimizer(record):
    """No findings, no logged loss, no update ratios: the page says so instead of breaking."""
    record.scalars.clear()
    for stats in record.layer_stats.values():
        stats.pop("update_ratio", None)
    page = parse(render_html(record, Diagnosis()))
    assert "No problems found." in page.section_text["verdict"]
    assert 'class="block verdict sev-ok"' in render_html(record, Diagnosis(), figures=[])
    assert "nothing to report" in page.section_text["findings"]
    text = page.section_text["figures"]
    assert "Loss curves \u2014 not recorded: log the loss" in text
    assert "Update-to-weight ratio per layer \u2014 not recorded" in text
    assert len(page.attrs("img")) == len(FIGURE_SIZES) - 2


def test_an_empty_record_still_makes_a_page():
    page = parse(render_html(RunRecord(), None))
    assert page.sections == SECTIONS and page.unbalanced == []
    assert page.body_rows.get("layers", []) == []
    assert page.attrs("img") == []
    assert page.section_text["figures"].count("not recorded") == len(FIGURE_SIZES)


def test_page_data_is_plain_and_matches_the_record(record, diagnosis, small_figures):
    page = build_report_page(record, diagnosis, title="My run", figures=small_figures)
    assert page.title == "My run"
    assert page.verdict.severity == "error"
    assert [row.name for row in page.layers] == record.layers
    assert [f.code for f in page.findings] == ["vanishing-gradients", "overfitting", "sigmoid-saturation"]
    assert page.layers[2].name == ODD_NAME and page.layers[2].worst == "error"


def test_same_input_same_document(document):
    record = synthetic_record()
    assert render_html(record, vanishing_diagnosis(record)) == document  # figures drawn afresh here


def test_write_html_is_atomic_and_leaves_no_file_when_rendering_fails(tmp_path, record, diagnosis, small_figures):
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("cannot describe this evidence")

    target = tmp_path / "report.html"
    written = write_html(target, record, diagnosis, title="first", figures=small_figures)
    assert written == target and "<title>first</title>" in target.read_text(encoding="utf-8")
    broken = Diagnosis([Finding("x", "error", "t", "m", "r", evidence={"value": Unprintable()})])
    with pytest.raises(RuntimeError, match="cannot describe"):
        write_html(target, record, broken)
    assert "<title>first</title>" in target.read_text(encoding="utf-8")  # the old report is untouched
    with pytest.raises(RuntimeError):
        write_html(tmp_path / "new.html", record, broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]  # no new or temporary file


def test_write_html_to_an_impossible_path_says_why(tmp_path, record, diagnosis):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(GradscopeError, match=r"Cannot write the HTML report to .*a-file/report\.html"):
        write_html(blocker / "report.html", record, diagnosis, figures=[])


# ---- the reusable page machinery (the depth sweep builds its page with it) ---------------


def test_render_page_escapes_text_and_keeps_markup():
    png = _tiny_png()
    sections = [
        Section("Results <1>", "depth < 8 & width > 2\n\nsecond paragraph", tables=[
            Table(["depth", "name", "ratio"], [[4, "<b>x</b>", 0.5], [16, Markup("<em>ok</em>"), None]]),
        ]),
        Section(
            "Plots", Markup("<p class='x'>trusted</p>"), figures=[Figure(png, alt='a "quoted" alt', caption="c & d")]
        ),
    ]
    document = render_page("Sweep <&>", sections, meta=[("Model", "Net<1>")])
    page = parse(document)
    assert page.unbalanced == []
    assert "<title>Sweep &lt;&amp;&gt;</title>" in document
    assert page.sections == ["results-1", "plots"]
    assert "depth &lt; 8 &amp; width &gt; 2" in document and document.count("<p>") >= 2
    assert "&lt;b&gt;x&lt;/b&gt;" in document and "<em>ok</em>" in document
    assert "<p class='x'>trusted</p>" in document
    assert page.body_rows["results-1"] == [["4", "<b>x</b>", "0.5"], ["16", "ok", "\u2014"]]
    assert 'data-type="num"' in document and 'data-sort="0.5"' in document
    assert page.attrs("img")[0]["alt"] == 'a "quoted" alt'
    assert "Net&lt;1&gt;" in document


def test_backticked_names_become_code_and_stay_escaped():
    document = render_page("t", [Section("S", "layer `a<b` and `c`"), Section("U", "odd ` backtick <i>")])
    assert "layer <code>a&lt;b</code> and <code>c</code>" in document
    assert "odd ` backtick &lt;i&gt;" in document


def test_render_page_rejects_duplicate_anchors():
    with pytest.raises(ValueError, match="unique"):
        render_page("t", [Section("Same"), Section("Same")])


def _tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), "white").save(buffer, format="PNG")
    return buffer.getvalue()


def test_several_networks_each_under_its_own_heading_with_unique_links(small_figures):
    from gradscope.network_runs import NetworkRun
    from gradscope.report.html import render_networks_html

    record = synthetic_record()
    diagnosis = vanishing_diagnosis(record)
    runs = [NetworkRun("generator", record, Diagnosis()), NetworkRun("<b>D</b>", record, diagnosis),
            NetworkRun("<b>D</b>!", record, diagnosis)]  # two names with one slug: anchors still unique
    document = render_networks_html(runs, figures=[small_figures] * 3)
    page = parse(document)
    assert page.unbalanced == [] and "<b>D</b>" not in document and "&lt;b&gt;D&lt;/b&gt;" in document
    assert page.sections[:5] == [f"generator-{s}" for s in SECTIONS]
    assert page.sections[5:10] == [f"b-d-b-{s}" for s in SECTIONS] and page.sections[10] == "b-d-b-3-verdict"
    assert len(page.sections) == len(set(page.sections)) == 15
    headings = re.findall(r"<h2>(.*?)</h2>", document)
    assert headings[0] == "generator" and headings[1] == "generator: Findings"
    # the per-layer table links each network's own finding
    links = {a["href"] for a in page.attrs("a") if a.get("href", "").startswith("#b-d-b-finding-")}
    ids = {a["id"] for a in page.attrs("article")}
    assert links and links <= {f"#{i}" for i in ids}
    assert "generator" in page.section_text["generator-verdict"] and "No problems found." in document
