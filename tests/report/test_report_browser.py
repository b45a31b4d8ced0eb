"""The HTML report in a real browser: headless Chromium renders it, runs its script, and loads nothing.

Chromium comes from Debian's `chromium` package (.ci/run installs it). Without it these tests
skip, except under CI (env CI set), where a missing browser is a failure.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gradscope.report.series import layer_median
from tests.report.htmlparse import parse
from tests.report.records import synthetic_record

BROWSER_TIMEOUT_S = 90
WINDOW = (1280, 2000)

# Injected before the report's own markup: records script errors, CSP violations, console.error,
# what the page fetched, and whether its images decoded; then sorts the layer table the way a
# click would, so the test can check the report's sorting script.
PROBE = """<script>
(function () {
  var root = document.documentElement, errors = [];
  function note(text) { errors.push(String(text)); root.setAttribute("data-probe-errors", errors.join(" | ")); }
  window.addEventListener("error", function (e) { note("error: " + e.message); });
  window.addEventListener("unhandledrejection", function (e) { note("rejection: " + e.reason); });
  document.addEventListener("securitypolicyviolation", function (e) { note("csp: " + e.blockedURI); });
  var consoleError = console.error;
  console.error = function () { note("console.error: " + Array.prototype.join.call(arguments, " ")); };
  window.addEventListener("load", function () {
    var fetched = performance.getEntriesByType("resource").map(function (r) { return r.name; });
    root.setAttribute("data-probe-fetched", JSON.stringify(fetched));
    var broken = Array.prototype.filter.call(document.images, function (img) {
      return !img.complete || img.naturalWidth === 0;
    });
    root.setAttribute("data-probe-broken-images", String(broken.length));
    var header = document.querySelector("#layers th:nth-child(5)");
    if (header) {
      header.click();
      var order = Array.prototype.map.call(document.querySelectorAll("#layers tbody tr"), function (row) {
        return row.cells[0].textContent;
      });
      root.setAttribute("data-probe-sorted", order.join(","));
      root.setAttribute("data-probe-sorted-by", header.textContent + " " + header.getAttribute("aria-sort"));
    }
    root.setAttribute("data-probe-loaded", "1");
  });
})();
</script>"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        if running_in_ci():
            pytest.fail("CI is set but Chromium is not installed: `apt-get install -y chromium` (see .ci/run).")
        pytest.skip("Chromium is not installed (Debian: `apt-get install -y chromium`); CI runs this test.")
    return path


@dataclass
class BrowserRun:
    stdout: str
    stderr: str

    def console_lines(self) -> list[str]:
        """Messages the page wrote to the console (Chromium logs them as `...:CONSOLE...`)."""
        return [line for line in self.stderr.splitlines() if ":CONSOLE" in line]


def run_chromium(chromium: str, workdir: Path, page: Path, *options: str) -> BrowserRun:
    profile = workdir / f"profile-{len(list(workdir.glob('profile-*')))}"  # fresh for every run
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--disable-quic",
        "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
        "--disable-extensions",
        "--disable-default-apps",
        "--hide-scrollbars",
        "--mute-audio",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *options,
        page.resolve().as_uri(),
    ]
    env = {**os.environ, "HOME": str(workdir)}  # Chromium writes caches under $HOME
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"Chromium did not finish within {BROWSER_TIMEOUT_S} s: {exc.stderr!r:.2000}")
    if done.returncode != 0:
        pytest.fail(f"Chromium exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return BrowserRun(done.stdout, done.stderr)


def with_probe(document: str) -> str:
    head = document.index("<head>") + len("<head>")
    return document[:head] + "\n" + PROBE + document[head:]


def probe_attributes(dom: str) -> dict[str, str]:
    return next(attrs for tag, attrs in parse(dom).tags if tag == "html")


@pytest.fixture(scope="module")
def probed(chromium, small_document, tmp_path_factory) -> tuple[BrowserRun, dict[str, str]]:
    workdir = tmp_path_factory.mktemp("browser")
    page = workdir / "report.html"
    page.write_text(with_probe(small_document), encoding="utf-8")
    run = run_chromium(chromium, workdir, page, "--dump-dom")
    return run, probe_attributes(run.stdout)


def test_report_runs_in_chromium_without_errors_or_fetches(probed):
    run, probe = probed
    assert probe.get("data-probe-loaded") == "1", run.stdout[:500]
    assert "data-probe-errors" not in probe, probe["data-probe-errors"]
    assert run.console_lines() == []
    assert probe["data-probe-fetched"] == "[]"  # data: images are not fetches; nothing else was loaded
    assert probe["data-probe-broken-images"] == "0"


def test_layer_table_sorts_in_the_browser(probed):
    run, probe = probed
    record = synthetic_record()
    assert probe["data-probe-sorted-by"] == "grad RMS ascending"
    values = [layer_median(record, name, "grad_rms") for name in record.layers]
    with_value = sorted((v, i) for i, v in enumerate(values) if v is not None)
    expected = [i for _, i in with_value] + [i for i, v in enumerate(values) if v is None]  # blanks last
    assert probe["data-probe-sorted"] == ",".join(str(i) for i in expected)
    dom = parse(run.stdout)
    assert any("js-sortable" in attrs.get("class", "") for attrs in dom.attrs("table"))


def test_the_probe_does_catch_errors(chromium, tmp_path):
    """A page with a broken script and an external image must trip the probe: the checks above can fail."""
    page = tmp_path / "broken.html"
    page.write_text(
        with_probe(
            "<!DOCTYPE html><html><head><meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
            "script-src 'unsafe-inline'\"></head><body><img src='http://192.0.2.1/x.png'>"
            "<script>console.log('hello'); notDefined();</script></body></html>"
        ),
        encoding="utf-8",
    )
    run = run_chromium(chromium, tmp_path, page, "--dump-dom")
    probe = probe_attributes(run.stdout)
    assert "notDefined is not defined" in probe["data-probe-errors"]
    assert "csp: http://192.0.2.1/x.png" in probe["data-probe-errors"]
    assert any("hello" in line for line in run.console_lines())


@pytest.fixture(scope="module")
def screenshots(chromium, small_document, tmp_path_factory) -> dict[str, tuple[BrowserRun, np.ndarray]]:
    """The report's first screen as Chromium paints it, with its script and with the script removed."""
    workdir = tmp_path_factory.mktemp("screenshots")
    shots = {}
    for name, document in (("with script", small_document), ("no script", without_scripts(small_document))):
        page = workdir / f"{name.replace(' ', '-')}.html"
        page.write_text(document, encoding="utf-8")
        shot = workdir / f"{name.replace(' ', '-')}.png"
        run = run_chromium(chromium, workdir, page, f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}")
        image = Image.open(io.BytesIO(shot.read_bytes()))
        image.load()
        assert image.size == WINDOW
        shots[name] = (run, np.asarray(image.convert("RGB"), dtype=float))
    return shots


def without_scripts(document: str) -> str:
    """What a browser with JavaScript disabled works from (new headless Chromium cannot switch it off)."""
    stripped = re.sub(r"<script>.*?</script>", "", document, flags=re.S)
    assert "<script" not in stripped
    return stripped


def test_screenshot_of_the_report(screenshots):
    run, pixels = screenshots["with script"]
    assert run.console_lines() == []
    assert pixels.std() > 20  # not a blank page
    # The inline stylesheet applied: the error verdict sits on its pale red background (#fdecea).
    verdict_red = np.all(np.abs(pixels - np.array([0xFD, 0xEC, 0xEA])) <= 3, axis=-1)
    assert verdict_red.sum() > 10_000


def test_page_looks_the_same_without_javascript(screenshots):
    _, scripted = screenshots["with script"]
    _, plain = screenshots["no script"]
    differing = np.any(scripted != plain, axis=-1).mean()
    assert differing < 0.001  # the script only adds behaviour (sorting), never layout: same pixels
