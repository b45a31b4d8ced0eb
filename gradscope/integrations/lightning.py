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
"""

from __future__ import annotations

import warnings
from typing import Any

from ..optional import require
from .session import WatchedByGradscope, torch_optimizer

L = require("lightning.pytorch", "lightning")

__all__ = ["GradscopeCallback"]


class GradscopeCallback(WatchedByGradscope, L.Callback):
    """Watch the fit with gradscope; `record` and `diagnosis` are set when it ends.

    Options (every, path, html, fail_on, log_summary, and any `gradscope.watch` keyword): see
    `WatchedByGradscope`; the summary scalars go to the trainer's loggers.
    """

    # ---- the fit -------------------------------------------------------------------------------
    def on_fit_start(self, trainer: "L.Trainer", pl_module: "L.LightningModule") -> None:
        optimizers = [torch_optimizer(o) for o in trainer.optimizers]
        optimizers = [o for o in optimizers if o is not None]
        if len(optimizers) > 1:
            warnings.warn(
                f"gradscope: the LightningModule has {len(optimizers)} optimizers; gradscope watches the steps of the "
                "first one (a record step is one step of that optimizer).",
                RuntimeWarning,
                stacklevel=2,
            )
        overrides = {}
        if trainer.world_size > 1 and "process_group" not in self.session.watch_options:
            import torch.distributed

            if torch.distributed.is_available() and torch.distributed.is_initialized():
                overrides["process_group"] = torch.distributed.group.WORLD  # every rank trains this module
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        self.session.start(pl_module, optimizers[0] if optimizers else None, scaler, **overrides)

    def on_train_batch_end(self, trainer: "L.Trainer", pl_module: "L.LightningModule", *args: Any) -> None:
        self._log_summaries(trainer, self.session.new_summaries())

    def on_fit_end(self, trainer: "L.Trainer", pl_module: "L.LightningModule") -> None:
        self._log_summaries(trainer, self.session.new_summaries(wait=True))  # on a GPU the last may be pending
        self.session.finish()

    def _log_summaries(self, trainer: "L.Trainer", summaries: list) -> None:
        if summaries and self.log_summary and trainer.is_global_zero:
            for step, scalars in summaries:
                for logger in trainer.loggers:
                    logger.log_metrics(scalars, step=step)

    def on_exception(self, trainer: "L.Trainer", pl_module: "L.LightningModule", exception: BaseException) -> None:
        self.session.finish(failed=True)
