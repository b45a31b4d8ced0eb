"""What the Lightning and Hugging Face callbacks share, free of either framework.

A callback only knows *when* things happen (fit starts, a batch ends, fit ends or fails);
`WatchSession` turns that into one watch: attach to the model and the optimizer, after each
batch hand back the summary scalars of newly recorded steps and check `fail_on`, and at the end
detach, diagnose, print the report and write the files asked for. Keeping it here means the
two callbacks behave the same and each stays a thin translation of its framework's events.
"""

from __future__ import annotations

import inspect
import os
import sys
from typing import Any, Optional

import torch
from torch import nn

from ..capture import Watcher
from ..capture.clock import check_budget
from ..capture.hooks import unwrap_optimizer
from ..diagnose import Diagnosis, diagnose
from ..diagnose.engine import SKIPPED
from ..diagnose.finding import SEVERITIES, severity_rank
from ..errors import GradscopeError
from ..network_runs import NetworkRun
from ..record import RunRecord
from ..summary import summary_scalars


class FindingThresholdError(GradscopeError, RuntimeError):
    """`fail_on=` stopped training: a finding reached that severity."""


def check_fail_on(fail_on: Optional[str]) -> Optional[str]:
    if fail_on in (None, "never"):
        return None
    if fail_on not in SEVERITIES:
        raise GradscopeError(
            f"fail_on must be one of {', '.join(SEVERITIES)} or None (never stop), got {fail_on!r}."
        )
    return fail_on


def torch_optimizer(optimizer: Any) -> Optional[torch.optim.Optimizer]:
    """The torch optimizer inside a framework's wrapper, or None if there is none: capture's own
    unwrapping (`unwrap_optimizer`), so the callbacks and `watch()` agree on what gets hooked."""
    try:
        return unwrap_optimizer(optimizer)[0]
    except GradscopeError:
        return None


def _watch_streams_to_a_store() -> bool:
    """Whether this gradscope's watch() takes path= (the run store); else the record is saved at the end."""
    return "path" in inspect.signature(Watcher.__init__).parameters


class WatchSession:
    """One watched fit: the Watcher, the summary scalars of new recorded steps, the end of the run."""

    def __init__(
        self,
        every: int,
        path: Optional[str | os.PathLike[str]],
        html: Optional[str | os.PathLike[str]],
        fail_on: Optional[str],
        watch_options: dict[str, Any],
    ) -> None:
        if not isinstance(every, int) or every < 1:
            raise GradscopeError(f"every must be a positive integer (record every Nth step), got {every!r}.")
        check_budget(watch_options.get("budget"))  # at the callback's construction, not at fit start
        self.every = every
        self.path = path
        self.html = html
        self.fail_on = check_fail_on(fail_on)
        self.watch_options = dict(watch_options)
        self.watcher: Optional[Watcher] = None
        self.notes: list[str] = []  # what the callback noticed about the run, for record.meta.notes
        self.record: Optional[RunRecord] = None
        self.diagnosis: Optional[Diagnosis] = None
        self._recorded_ended = 0  # watcher.recorded_steps at the last look
        self._recorded_seen = 0  # recorded steps already summarised
        self._next_check = 1  # fail_on: diagnose when the record reaches this many steps

    @property
    def attached(self) -> bool:
        return self.watcher is not None

    def start(self, model: nn.Module, optimizer: Any, scaler: Any = None, **overrides: Any) -> Watcher:
        options = {**self.watch_options, **overrides}
        if self.path is not None and _watch_streams_to_a_store():
            options["path"] = self.path  # each recorded step reaches disk as it is taken
        if scaler is not None and "scaler" not in self.watch_options:
            options["scaler"] = scaler
        self.watcher = Watcher(model, optimizer, every=self.every, **options).attach()
        self.record = None
        self.diagnosis = None
        self._recorded_ended = self._recorded_seen = 0
        self._next_check = 1
        return self.watcher

    def new_summaries(self, wait: bool = False) -> list[tuple[int, dict[str, float]]]:
        """(step, summary scalars) of each step recorded since the last call; checks fail_on.

        Cheap between recorded steps: the record is only read when the watcher's count of recorded
        steps says one was added (every=N or budget= chose it). On a GPU a step is added once its
        copy has landed, about a step after it ended, so that training never waits for it; `wait`
        (at the end of the fit) takes every recorded step, waiting for the GPU if need be.
        """
        watcher = self.watcher
        if watcher is None or (watcher.recorded_steps == self._recorded_ended and not wait):
            return []
        if not watcher.is_main_process:
            self._recorded_ended = watcher.recorded_steps
            return []
        record = watcher.record if wait else watcher.landed_record()
        self._recorded_ended = watcher.recorded_steps  # after the read, which may have added steps
        fresh = [(record.steps[i], summary_scalars(record, i)) for i in range(self._recorded_seen, len(record.steps))]
        self._recorded_seen = len(record.steps)
        if self.fail_on is not None and len(record.steps) >= self._next_check:
            # Diagnosing reads the whole record: at geometrically spaced sizes, so a long run costs O(steps).
            self._next_check = max(len(record.steps) + 1, int(len(record.steps) * 1.25))
            diagnosis = diagnose(record)
            if self._failing(diagnosis):
                self.finish(failed=True)  # detached and written before the framework sees the exception
                self._raise_if_failing(diagnosis, record)
        return fresh

    def finish(self, failed: bool = False, out: Any = None, report: bool = True) -> Optional[RunRecord]:
        """Detach (idempotent), then on the main process diagnose, write path, and (with `report`)
        print and write html; without it the caller reports several networks' runs together."""
        watcher, self.watcher = self.watcher, None
        if watcher is None:
            return self.record
        self.record = watcher.detach()
        self.record.meta.notes.extend(n for n in self.notes if n not in self.record.meta.notes)
        if not watcher.is_main_process:
            return self.record
        self.diagnosis = diagnose(self.record)
        if self.path is not None and not _watch_streams_to_a_store():
            self.record.save(self.path)
        if not report:
            return self.record
        if self.html is not None:
            from ..report.html import write_html

            write_html(self.html, self.record, self.diagnosis, title="gradscope report")
        if not failed:
            from ..report.text import render_text

            print(render_text(self.record, self.diagnosis).rstrip("\n"), file=out or sys.stdout)
            if self.fail_on is not None:
                self._raise_if_failing(self.diagnosis, self.record)
        return self.record

    def raise_if_failing(self) -> None:
        """fail_on, checked on the finished run's diagnosis (after a report of several networks)."""
        if self.fail_on is not None and self.diagnosis is not None and self.record is not None:
            self._raise_if_failing(self.diagnosis, self.record)

    def _failing(self, diagnosis: Diagnosis) -> list[Any]:
        rank = severity_rank(self.fail_on)
        return [f for f in diagnosis if f.code != SKIPPED and severity_rank(f.severity) >= rank]

    def _raise_if_failing(self, diagnosis: Diagnosis, record: RunRecord) -> None:
        failing = self._failing(diagnosis)
        if failing:
            self.diagnosis = diagnosis
            listed = "; ".join(f"[{f.severity}] {f.code}: {f.title}" for f in failing)
            raise FindingThresholdError(
                f"gradscope stopped training at step {record.steps[-1]} because fail_on={self.fail_on!r} and it "
                f"found: {listed}. The callback's .record and .diagnosis hold the evidence; pass fail_on=None to "
                "only report."
            )


class WatchedByGradscope:
    """What both callbacks share: their options, and the run's record and diagnosis.

    every: record every Nth optimizer step. path: the run record (streamed into a run store when
    watch() takes path=, else saved as JSON at the end; rank 0 only). html: write the
    HTML report there. fail_on: "error" (or "warning", "info") stops training with a clear message as
    soon as a finding of that severity appears. log_summary: log the few `gradscope/...` scalars of
    `gradscope.summary` per recorded step through the framework's own logging. Other keywords
    (include=, exclude=, activations=, ...) go to `gradscope.watch`.
    """

    def __init__(
        self,
        every: int = 1,
        path: Optional[str | os.PathLike[str]] = None,
        html: Optional[str | os.PathLike[str]] = None,
        fail_on: Optional[str] = None,
        log_summary: bool = True,
        **watch_options: Any,
    ) -> None:
        super().__init__()
        self.session = WatchSession(every, path, html, fail_on, watch_options)
        self.configured = self.session  # the options as given; `session` is a network's in a fit of several
        self.log_summary = log_summary
        # Several networks (one optimizer each): a session per network, by name; `session` is the first.
        self.network_sessions: dict[str, WatchSession] = {}

    @property
    def record(self) -> Optional[RunRecord]:
        """The RunRecord: the run so far while training goes on, complete once it ended (with
        several networks, the first one's; `runs` holds them all)."""
        return _current_record(self.session)

    @property
    def diagnosis(self) -> Optional[Diagnosis]:
        """The findings of the finished run (or of the run when fail_on stopped it)."""
        return self.session.diagnosis

    @property
    def runs(self) -> list[NetworkRun]:
        """One NetworkRun (name, record, diagnosis) per watched network: "model" alone, or one per
        optimizer when the fit trains several networks (a GAN's generator and discriminator)."""
        sessions = self.network_sessions or {"model": self.session}
        return [
            NetworkRun(name, record, session.diagnosis)
            for name, session in sessions.items()
            if (record := _current_record(session)) is not None
        ]


def _current_record(session: WatchSession) -> Optional[RunRecord]:
    return session.watcher.record if session.watcher is not None else session.record
