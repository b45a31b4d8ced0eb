"""gradscope in a Hugging Face `Trainer` (or `Seq2SeqTrainer`) run: one callback.

    from gradscope.integrations.transformers import GradscopeCallback

    callback = GradscopeCallback(html="report.html")
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[callback])
    trainer.train()
    callback.record, callback.diagnosis

The callback watches the model the Trainer trains with the torch optimizer inside accelerate's
wrapper, from the first moment that optimizer exists to the end of training, so a recorded step
is one optimizer step whatever `gradient_accumulation_steps` is. Summary scalars are added to the
Trainer's own logs (`on_log`). Under DeepSpeed ZeRO or FSDP (v1) the per-parameter gradients are
partitioned or flattened: gradscope says so once and records the activations and the backprop
signal only.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

from ..optional import require
from .session import WatchedByGradscope, torch_optimizer

transformers = require("transformers", "transformers")

__all__ = ["GradscopeCallback"]

SHARDED_NOTE = (
    "gradscope: this Trainer runs under {what}, where parameter gradients are partitioned across ranks or "
    "flattened and are not materialised per parameter; gradscope records the activation statistics and the "
    "backprop signal (backprop_norm) only, and no gradient, weight or update statistics."
)


class GradscopeCallback(WatchedByGradscope, transformers.TrainerCallback):
    """Watch `Trainer.train()` with gradscope; `record` and `diagnosis` are set when training ends.

    Options (every, path, html, fail_on, log_summary, and any `gradscope.watch` keyword): see
    `WatchedByGradscope`. If `train()` raises, the Trainer calls no callback: call `detach()`
    in a `finally` to remove the hooks.
    """

    _noted_sharding = False

    def detach(self) -> Any:
        """Remove every hook now (after an exception in `train()`); returns the record."""
        return self.session.finish(failed=True)

    # ---- training -------------------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None, **kw: Any):
        self._pending: dict[str, float] = {}  # summary scalars waiting for the Trainer's next log
        self._attach(args, model, optimizer)

    def on_step_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None, **kw: Any):
        if not self.session.attached:  # the optimizer did not exist yet at on_train_begin (DeepSpeed, FSDP)
            self._attach(args, model, optimizer)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for _, scalars in self.session.new_summaries():
            self._pending.update(scalars)  # the latest recorded step's values are the ones logged next

    def on_log(self, args: Any, state: Any, control: Any, logs: Optional[dict] = None, **kwargs: Any) -> None:
        pending = getattr(self, "_pending", None)
        if not pending or not self.log_summary or logs is None or not state.is_world_process_zero:
            return
        if "loss" not in logs and "train_loss" not in logs:
            return  # an evaluation's log: keep the scalars for the next training log
        logs.update(self._pending)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(self._pending)  # the Trainer copied `logs` there just before
        self._pending = {}

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.session.finish()

    # ---- attaching -------------------------------------------------------------------------------
    def _attach(self, args: Any, model: Any, optimizer: Any) -> None:
        if model is None or (optimizer is None and not self._sharded(args)):
            return
        inner = torch_optimizer(optimizer)
        overrides: dict[str, Any] = {}
        sharded = self._sharded(args)
        if sharded or (optimizer is not None and inner is None):
            self._note_sharding(sharded or f"an optimizer gradscope cannot hook ({type(optimizer).__name__})")
            overrides = {"gradients": False}
            inner = None
        scaler = getattr(optimizer, "scaler", None)  # accelerate's GradScaler under fp16
        self.session.start(model, inner, scaler, **overrides)

    @staticmethod
    def _sharded(args: Any) -> Optional[str]:
        if getattr(args, "deepspeed", None):
            return "DeepSpeed"
        if getattr(args, "fsdp", None):
            return "FSDP"
        return None

    def _note_sharding(self, what: str) -> None:
        if not self._noted_sharding:
            self._noted_sharding = True
            self.session.notes.append(SHARDED_NOTE.format(what=what).removeprefix("gradscope: "))
            warnings.warn(SHARDED_NOTE.format(what=what), RuntimeWarning, stacklevel=3)
