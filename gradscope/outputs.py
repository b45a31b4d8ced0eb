"""The report files a command was asked for (`json`, `html`, `png_dir`): checked, rendered, written.

The order matters to users: paths are checked *before* training (a typo in the HTML path must not
cost a training run), and everything is rendered to memory *before* anything is written (a
rendering error leaves no file behind). `io.write_all` then writes the rendered files all or
nothing.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from .diagnose import Diagnosis
from .diagnose.coverage import coverage
from .errors import OutputError
from .io import RenderedFile, json_text, to_json_value
from .network_runs import NETWORKS_KEY, NetworkRun, file_safe
from .record import RunRecord

if TYPE_CHECKING:
    from .report.figures import RenderedFigure


@dataclass
class OutputPaths:
    json: Optional[Path] = None  # the run record (+ its findings), readable by `gradscope report`/`compare`
    html: Optional[Path] = None  # one self-contained HTML report
    png_dir: Optional[Path] = None  # one PNG per figure

    @classmethod
    def from_options(cls, json: Optional[str], html: Optional[str], png_dir: Optional[str]) -> "OutputPaths":
        as_path = lambda value: Path(value) if value else None  # noqa: E731 - tiny local adapter
        return cls(as_path(json), as_path(html), as_path(png_dir))

    def requested(self) -> bool:
        return any((self.json, self.html, self.png_dir))

    def check_writable(self) -> None:
        """Raise `OutputError` now for any path that could not be written later. Creates nothing."""
        files = [(field, path) for field, path in (("json", self.json), ("html", self.html)) if path is not None]
        for field, path in files:
            check_file_writable(field, path)
        if len(files) == 2 and files[0][1].resolve() == files[1][1].resolve():
            raise OutputError(f"`json` and `html` both point to {str(files[0][1])!r}; give them different names.")
        if self.png_dir is not None:
            if self.png_dir.exists() and not self.png_dir.is_dir():
                raise OutputError(
                    f"`png_dir` {str(self.png_dir)!r} is a file, but `png_dir` takes a folder to write the figures "
                    "into."
                )
            _check_folder("png_dir", self.png_dir, self.png_dir)

    def render(
        self, record: RunRecord, diagnosis: Diagnosis, title: Optional[str] = None, fix_trials: Sequence[Any] = ()
    ) -> list[RenderedFile]:
        """Everything requested, as bytes in memory; nothing is written yet. `fix_trials` go into the HTML."""
        rendered: list[RenderedFile] = []
        if self.json is not None:
            rendered.append(RenderedFile(self.json, record_json(record, diagnosis).encode("utf-8"), "JSON run record"))
        if self.html is None and self.png_dir is None:
            return rendered
        # Imported here: the text-only path needs neither matplotlib nor the templates.
        from .report.html import render_html
        from .report.plots import build_figures

        figures = build_figures(record, diagnosis)  # drawn once, for the page and the PNGs alike
        if self.html is not None:
            page = render_html(record, diagnosis, title=title, figures=figures, fix_trials=fix_trials)
            rendered.append(RenderedFile(self.html, page.encode("utf-8"), "HTML report"))
        if self.png_dir is not None:
            rendered += self._pngs(figures)
        return rendered

    def render_networks(self, runs: Sequence[NetworkRun], title: Optional[str] = None) -> list[RenderedFile]:
        """`render` for several networks: one JSON document and one HTML page holding every network
        under its own name, and each network's PNGs prefixed with its name (`generator.loss.png`)."""
        if len(runs) == 1:
            return self.render(runs[0].record, runs[0].diagnosis, title=title)
        rendered: list[RenderedFile] = []
        if self.json is not None:
            rendered.append(RenderedFile(self.json, networks_json(runs).encode("utf-8"), "JSON run record"))
        if self.html is None and self.png_dir is None:
            return rendered
        from .report.html import render_networks_html
        from .report.plots import build_figures

        figures = [build_figures(run.record, run.diagnosis) for run in runs]
        if self.html is not None:
            page = render_networks_html(runs, title=title, figures=figures)
            rendered.append(RenderedFile(self.html, page.encode("utf-8"), "HTML report"))
        if self.png_dir is not None:
            for run, drawn in zip(runs, figures):
                rendered += self._pngs(drawn, prefix=f"{file_safe(run.name)}.")
        return rendered

    def _pngs(self, figures: Sequence[RenderedFigure], prefix: str = "") -> list[RenderedFile]:
        assert self.png_dir is not None
        return [
            RenderedFile(self.png_dir / f"{prefix}{figure.stem}.png", figure.png, "PNG figure")
            for figure in figures
            if figure.png is not None
        ]


def record_json(record: RunRecord, diagnosis: Optional[Diagnosis] = None) -> str:
    """The run record's JSON, plus its findings under "findings" and why statistics are missing under
    "not_measured" ({layer: {statistic: reason}}), for scripts.

    `RunRecord.load` ignores the extra key; `gradscope report` diagnoses the record afresh (a
    different --config may give different findings), so the stored findings are informational.
    """
    return json_text(_record_data(record, diagnosis))


def networks_json(runs: Sequence[NetworkRun]) -> str:
    """Several networks' records in one JSON document: `{"networks": {name: record JSON, ...}}`, each
    value exactly what `record_json` writes for that network (`gradscope report` reads it back)."""
    return json_text({NETWORKS_KEY: {run.name: _record_data(run.record, run.diagnosis) for run in runs}})


def _record_data(record: RunRecord, diagnosis: Optional[Diagnosis]) -> dict[str, Any]:
    data = record.to_dict()
    cover = coverage(record)
    # Why a statistic of the report's tables has no value: {layer: {statistic: reason}}; the one line
    # when no activation statistic could be measured anywhere. Extra keys: RunRecord.load ignores them.
    data["not_measured"] = cover.not_measured()
    note = cover.activation_note()
    if note:
        data["not_measured_note"] = note
    if diagnosis is not None:
        data["findings"] = [to_json_value(asdict(finding), stringify_unknown=True) for finding in diagnosis]
    return data


def check_file_writable(field: str, path: Path) -> None:
    """Raise `OutputError` now if the file `path` (given as `field`) could not be written later. Creates nothing."""
    if path.is_dir():
        raise OutputError(f"`{field}` {str(path)!r} is a folder; give a file name, e.g. {str(path / 'report')!r}.")
    _check_folder(field, path.parent, path)


def fix_trial_files(path: Path, trials: Sequence[Any], base: RunRecord, diagnosis: Diagnosis) -> list[RenderedFile]:
    """What `--fixes-json PATH` writes, in memory: PATH (the trials, `FixTrial.to_dict()` each), PATH's
    stem + `.base.json` (the base run) and stem + `.<finding>.<fix>.json` per trial that trained, so that
    `gradscope compare` can show any trial against the base run."""
    base_path = path.with_name(f"{path.stem}.base.json")
    files = [RenderedFile(base_path, record_json(base, diagnosis).encode("utf-8"), "JSON run record")]
    entries = []
    for trial in trials:
        entry = trial.to_dict()
        if trial.record is not None:
            target = path.with_name(f"{path.stem}.{trial.finding}.{trial.fix}.json")
            files.append(RenderedFile(target, record_json(trial.record).encode("utf-8"), "JSON run record"))
            entry["record"] = target.name
        entries.append(entry)
    document = json_text(to_json_value({"base": base_path.name, "trials": entries}, stringify_unknown=True))
    return [RenderedFile(path, document.encode("utf-8"), "fix trials JSON"), *files]


def _check_folder(field: str, folder: Path, target: Path) -> None:
    """The nearest existing ancestor of `folder` must be a folder we can create files in."""
    existing = folder if str(folder) else Path(".")
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(
            f"Cannot write `{field}` {str(target)!r}: {str(existing)!r} is a file, not a folder. Choose another path."
        )
    try:
        # The one reliable test (root, ACLs, read-only mounts): create a file there, then delete it.
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise OutputError(
            f"Cannot write `{field}` {str(target)!r}: the folder {str(existing)!r} is not writable "
            f"({exc.strerror or exc}). Choose a folder you can write to, or fix its permissions."
        ) from None
