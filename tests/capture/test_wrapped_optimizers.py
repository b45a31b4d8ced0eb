"""The optimizer wrappers users actually hold: gradscope hooks the torch optimizer inside.

Real accelerate and Lightning objects (both in the `test` extra), no stand-ins.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from accelerate.state import AcceleratorState
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch.utils.data import DataLoader, TensorDataset

import gradscope
from gradscope.errors import GradscopeError

from ..models import all_hooks, classification_batches, mlp


@pytest.fixture
def accelerator():
    yield Accelerator(cpu=True)
    AcceleratorState._reset_state(True)  # a process-wide singleton: leave none behind for other tests


def test_accelerated_optimizer_from_accelerator_prepare_is_watched_through_its_torch_optimizer(accelerator):
    torch.manual_seed(0)
    model = accelerator.prepare(mlp())
    opt = accelerator.prepare(torch.optim.SGD(model.parameters(), lr=0.1))
    assert isinstance(opt, AcceleratedOptimizer) and not hasattr(opt, "_optimizer_step_pre_hooks")
    before = all_hooks(model, opt.optimizer)
    used = []
    with gradscope.watch(model, optimizer=opt) as run:  # raised AttributeError in attach() before
        for x, y in classification_batches(3):
            accelerator.backward(F.cross_entropy(model(x), y))
            used.append(model[0].weight.grad.norm().item())
            opt.step()
            opt.zero_grad()
    record = run.record
    assert record.steps == [0, 1, 2] and not record.hook_errors
    assert record.series("grad_norm", "0.weight") == pytest.approx(used, rel=1e-6)
    assert all(v is not None and v > 0 for v in record.series("update_ratio", "0.weight"))
    assert record.meta.optimizer == "SGD"
    assert all_hooks(model, opt.optimizer) == before


def test_the_grad_scaler_an_accelerated_optimizer_carries_tells_skipped_steps(accelerator):
    torch.manual_seed(0)
    model = mlp()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    opt = AcceleratedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), device_placement=False, scaler=scaler)
    said_skipped = []
    with gradscope.watch(model, optimizer=opt) as run:  # no scaler=: the wrapper's is used
        for i, (x, y) in enumerate(classification_batches(4)):
            loss = F.cross_entropy(model(x), y) * (float("inf") if i == 2 else 1.0)
            scaler.scale(loss).backward()
            opt.step()
            said_skipped.append(opt.step_was_skipped)
            opt.zero_grad()
    assert said_skipped == [False, False, True, False]  # accelerate's own account of the run
    assert run.record.steps == [0, 1, 2, 3] and run.record.skipped_steps == [2]
    assert run.record.meta.options["scaler"] is True


class _Classifier(LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = mlp()
        self.used = []  # gradient norm of the first weight as each optimizer step uses it

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def on_before_optimizer_step(self, optimizer):
        self.used.append(self.net[0].weight.grad.norm().item())


class _WatchWithLightningOptimizer(Callback):
    """Watches with what `LightningModule.optimizers()` returns: a LightningOptimizer."""

    def on_train_start(self, trainer, pl_module):
        opt = pl_module.optimizers()
        assert isinstance(opt, LightningOptimizer)
        self.torch_optimizer = opt.optimizer
        self.before = all_hooks(pl_module, opt.optimizer)
        self.run = gradscope.watch(pl_module, optimizer=opt).attach()

    def on_train_end(self, trainer, pl_module):
        self.record = self.run.detach()
        self.after = all_hooks(pl_module, self.torch_optimizer)


def test_lightning_optimizer_in_a_real_fit_with_accumulation_reads_what_each_step_used():
    # Lightning steps with a closure: forward and backward run inside optimizer.step(), after its
    # pre-hooks, so the gradients are read when the closure returns (reading them earlier would
    # give the previous step's).
    module, callback = _Classifier(), _WatchWithLightningOptimizer()
    x = torch.cat([b[0] for b in classification_batches(8)])
    y = torch.cat([b[1] for b in classification_batches(8)])
    trainer = Trainer(
        max_epochs=1, accelerator="cpu", devices=1, accumulate_grad_batches=2, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[callback],
    )
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=16))
    record = callback.record
    assert record.steps == [0, 1, 2, 3] and not record.hook_errors  # 8 batches, 2 per optimizer step
    assert record.series("grad_norm", "net.0.weight") == pytest.approx(module.used, rel=1e-6)
    assert record.series("act_calls", "net.0") == [2.0] * 4
    assert all(v is not None and v > 0 for v in record.series("update_ratio", "net.0.weight"))
    assert callback.after == callback.before
    # the LightningModule's own forward never runs (Lightning calls training_step): its layers' do
    assert not any("no forward hook ran" in note for note in record.meta.notes)


def test_an_optimizer_stepped_with_a_closure_reads_the_gradients_the_closure_made():
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=1)
    used = []
    with gradscope.watch(model, optimizer=opt) as run:
        for x, y in classification_batches(3):
            def closure(x=x, y=y):
                opt.zero_grad()
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                return loss

            opt.step(closure)
            used.append(model[0].weight.grad.norm().item())  # LBFGS leaves the closure's gradients
    assert run.record.steps == [0, 1, 2]
    assert run.record.series("grad_norm", "0.weight") == pytest.approx(used, rel=1e-6)


@pytest.mark.parametrize(
    "not_an_optimizer, says",
    [
        (lambda model: model.parameters(), "must be a torch.optim.Optimizer"),
        (lambda model: model, "must be a torch.optim.Optimizer"),
        (lambda model: torch.optim.lr_scheduler.StepLR(torch.optim.SGD(model.parameters(), lr=0.1), 1), "scheduler"),
    ],
)
def test_an_object_that_is_no_optimizer_gets_a_clear_error(not_an_optimizer, says):
    model = mlp()
    with pytest.raises(GradscopeError, match=says):
        gradscope.watch(model, optimizer=not_an_optimizer(model))
    assert all_hooks(model) == 0
