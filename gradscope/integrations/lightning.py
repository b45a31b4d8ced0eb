"""gradscope in a PyTorch Lightning fit: one callback.

    from gradscope.integrations.lightning import GradscopeCallback

    callback = GradscopeCallback(html="report.html")
    trainer = L.Trainer(callbacks=[callback], accumulate_grad_batches=2, gradient_clip_val=1.0)
    trainer.fit(model, loader)
    callback.record, callback.diagnosis

The callback watches the LightningModule with the trainer's torch optimizer from the start of
the fit to its end (also when it fails), so a recorded step is one optimizer step whatever
`accumulate_grad_batches` is; the precision plugin's GradScaler is passed on, so AMP runs are
unscaled. Summary scalars go to the trainer's loggers on rank 0 only.

A LightningModule whose `configure_optimizers` returns one optimizer per network (a GAN's
generator and discriminator, trained with manual optimization) is watched network by network:
each submodule with its own optimizer, so each has its own record, steps and findings
(`callback.runs`; `record` and `diagnosis` are the first network's), one text report and one
HTML page show them under their names, `path=` becomes one file per network
(`gan.generator.gsrun`), and the summary scalars are `gradscope/<network>/...`. Optimizers that
do not each train their own submodule are watched as one optimizer would be, with a warning
saying why (see `gradscope.network_split`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Optional

from ..io import write_file
from ..network_runs import file_safe
from ..network_split import NetworkPart, network_note, split_networks
from ..optional import require
from ..report.html import render_networks_html
from ..report.text import render_networks_text
from .session import WatchedByGradscope, WatchSession, torch_optimizer

L = require("lightning.pytorch", "lightning")

__all__ = ["GradscopeCallback"]


class GradscopeCallback(WatchedByGradscope, L.Callback):
    """Watch the fit with gradscope; `record` and `diagnosis` are set when it ends.

    Options (every, path, html, fail_on, log_summary, and any `gradscope.watch` keyword): see
    `WatchedByGradscope`; the summary scalars go to the trainer's loggers. A LightningModule with
    one optimizer per network (a GAN) gets one record per network: see `runs`.
    """

    # ---- the fit -------------------------------------------------------------------------------
    def on_fit_start(self, trainer: "L.Trainer", pl_module: "L.LightningModule") -> None:
        optimizers = [torch_optimizer(o) for o in trainer.optimizers]
        optimizers = [o for o in optimizers if o is not None]
        overrides = {}
        if trainer.world_size > 1 and "process_group" not in self.session.watch_options:
            import torch.distributed

            if torch.distributed.is_available() and torch.distributed.is_initialized():
                overrides["process_group"] = torch.distributed.group.WORLD  # every rank trains this module
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        self.session, self.network_sessions = self.configured, {}  # a callback may see several fits:
        self.session.notes = []  # what it noticed about an earlier fit is not this one's
        if len(optimizers) > 1:
            split = split_networks(pl_module, optimizers, optimizers, source="configure_optimizers")
            if split.note:
                warnings.warn(f"gradscope: {split.note}", RuntimeWarning, stacklevel=2)
                self.session.notes.append(split.note)
            if len(split.parts) > 1:
                self._start_networks(split.parts, scaler, overrides)
                return
        self.session.start(pl_module, optimizers[0] if optimizers else None, scaler, **overrides)

    def _start_networks(self, parts: list[NetworkPart], scaler: Any, overrides: dict[str, Any]) -> None:
        """One watch per network, each with its own optimizer; their files and report come at the end."""
        first = self.configured
        names = [part.name for part in parts]
        for part in parts:
            session = WatchSession(first.every, _network_path(first.path, part.name), None, first.fail_on,
                                   first.watch_options)
            session.notes = [*first.notes, network_note(part.name, names, "configure_optimizers")]
            session.start(part.module, part.optimizer, scaler, **overrides)
            self.network_sessions[part.name] = session
        self.session = self.network_sessions[names[0]]

    def on_train_batch_end(self, trainer: "L.Trainer", pl_module: "L.LightningModule", *args: Any) -> None:
        for name, session in self._sessions():
            self._log_summaries(trainer, session.new_summaries(), name)

    def on_fit_end(self, trainer: "L.Trainer", pl_module: "L.LightningModule") -> None:
        for name, session in self._sessions():  # on a GPU the last steps may be pending
            self._log_summaries(trainer, session.new_summaries(wait=True), name)
        if not self.network_sessions:
            self.session.finish()
            return
        for _, session in self._sessions():
            session.finish(report=False)
        if trainer.is_global_zero:
            self._report_networks()
        for _, session in self._sessions():
            session.raise_if_failing()

    def _report_networks(self) -> None:
        """The networks' report: one text report and one HTML page, each network under its name."""
        runs = self.runs
        html = self.configured.html
        if html is not None:
            document = render_networks_html(runs, title="gradscope report")
            write_file(html, document.encode("utf-8"), "HTML report")
        print(render_networks_text(runs).rstrip("\n"))

    def _sessions(self) -> list[tuple[Optional[str], WatchSession]]:
        """(network name, session) of each watch; the name is None for a fit with one network."""
        if self.network_sessions:
            return list(self.network_sessions.items())
        return [(None, self.session)]

    def _log_summaries(self, trainer: "L.Trainer", summaries: list, network: Optional[str] = None) -> None:
        if summaries and self.log_summary and trainer.is_global_zero:
            for step, scalars in summaries:
                if network is not None:  # gradscope/grad_norm_total -> gradscope/generator/grad_norm_total
                    scalars = {_network_scalar(key, network): value for key, value in scalars.items()}
                for logger in trainer.loggers:
                    logger.log_metrics(scalars, step=step)

    def on_exception(self, trainer: "L.Trainer", pl_module: "L.LightningModule", exception: BaseException) -> None:
        for _, session in self._sessions():
            session.finish(failed=True)


def _network_path(path: Optional[str | os.PathLike[str]], network: str) -> Optional[Path]:
    """runs/gan.gsrun -> runs/gan.generator.gsrun: one run file per network (a run store holds one run)."""
    if path is None:
        return None
    path = Path(path)
    return path.with_name(f"{path.stem}.{file_safe(network)}{path.suffix}")


def _network_scalar(key: str, network: str) -> str:
    head, _, rest = key.partition("/")
    return f"{head}/{network}/{rest}" if rest else f"{network}/{key}"

