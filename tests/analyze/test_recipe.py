"""The training-recipe part of the model-file contract: make_optimizer(model), make_scheduler,
clip_grad_norm / --clip, train_step with carried state, several optimizers, and their errors."""

from __future__ import annotations

import sys
import textwrap

import pytest

from gradscope.analyze import AnalyzeConfig, analyze_file, analyze_networks
from gradscope.analyze.training import validation_steps
from gradscope.errors import ConfigError, ModelFileError

HEAD = """
import torch
import torch.nn.functional as F
from torch import nn

def build_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))

def make_batch(n):
    x = torch.randn(n, 4)
    return x, (x[:, 0] > 0).long()
"""


@pytest.fixture
def write(tmp_path):
    def write(body: str, name: str = "model.py"):
        path = tmp_path / name
        path.write_text(HEAD + textwrap.dedent(body))
        return path

    return write


def test_make_optimizer_gets_the_model_when_its_parameter_is_named_model(write):
    path = write(
        """
        SEEN = []
        def make_optimizer(model):
            SEEN.append(type(model).__name__)
            decay = [p for p in model.parameters() if p.dim() >= 2]
            rest = [p for p in model.parameters() if p.dim() < 2]
            return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}])
        """
    )
    record = analyze_file(path, AnalyzeConfig(steps=2, batch_size=4))
    assert sys.modules["__gradscope_model__"].SEEN == ["Sequential"]
    assert record.meta.optimizer == "AdamW" and record.meta.options["optimizer_used"] == "AdamW from make_optimizer"


def test_a_scheduler_is_stepped_after_every_step_and_clipping_bounds_the_gradient(write):
    path = write(
        """
        LRS, OPT = [], []
        clip_grad_norm = 1e-3
        def make_optimizer(parameters):
            return torch.optim.SGD(parameters, lr=0.1)
        def make_scheduler(optimizer):
            OPT.append(optimizer)
            return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (step + 1) / 4)
        def loss_fn(outputs, targets):
            LRS.append(OPT[-1].param_groups[0]["lr"])  # the rate this step trains with
            return F.cross_entropy(outputs, targets)
        """
    )
    record = analyze_file(path, AnalyzeConfig(steps=4, batch_size=8))
    assert sys.modules["__gradscope_model__"].LRS == pytest.approx([0.025, 0.05, 0.075, 0.1])
    # gradients are read at optimizer.step, after clipping: the total norm is the clip level
    total = sum(record.series("grad_norm", name)[0] ** 2 for name in ("0", "2")) ** 0.5
    assert total == pytest.approx(1e-3, rel=1e-4)
    assert "clipped at 0.001" in record.meta.options["optimizer_used"]
    unclipped = analyze_file(path, AnalyzeConfig(steps=1, batch_size=8, clip=10.0))
    assert sum(unclipped.series("grad_norm", n)[0] ** 2 for n in ("0", "2")) ** 0.5 > 1e-2
    assert any("clip=10.0 replaced clip_grad_norm" in note for note in unclipped.meta.notes)


def test_train_step_runs_the_users_step_and_keeps_its_state(write):
    path = write(
        """
        CALLS = []
        def make_optimizer(parameters):
            return torch.optim.SGD(parameters, lr=0.05)
        def train_step(model, batch, optimizer, state):
            x, y = batch
            state["count"] = state.get("count", 0) + 1
            CALLS.append(state["count"])
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            return loss.item() * 0 + 7.0 if state["count"] == 3 else loss
        """
    )
    record = analyze_file(path, AnalyzeConfig(steps=4, batch_size=8))
    assert sys.modules["__gradscope_model__"].CALLS == [1, 2, 3, 4]
    steps, losses = record.scalar_series("loss")
    assert steps == [0, 1, 2, 3] and losses[2] == 7.0  # a float return is logged as is
    assert record.steps == [0, 1, 2, 3] and record.last("update_ratio", "0") > 0


def test_train_step_may_drive_several_optimizers(write):
    path = write(
        """
        def make_optimizer(model):
            return {"first": torch.optim.SGD(model[0].parameters(), lr=0.05),
                    "head": torch.optim.Adam(model[2].parameters(), lr=1e-3)}
        def train_step(model, batch, optimizers):
            x, y = batch
            for opt in optimizers.values():
                opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            for opt in optimizers.values():
                opt.step()
            return loss
        """
    )
    first, head = analyze_networks(path, AnalyzeConfig(steps=3, batch_size=8))  # one record per trained part
    assert (first.name, head.name) == ("first", "head")
    assert first.record.meta.options["optimizer_used"] == "SGD from make_optimizer"
    assert head.record.meta.options["optimizer_used"] == "Adam from make_optimizer"
    for run in (first, head):
        assert run.record.steps == [0, 1, 2] and "" in [m.name for m in run.record.modules]  # the layer itself
        assert len(run.record.scalar_series("loss")[1]) == 3


@pytest.mark.parametrize(
    "body, phrase",
    [
        ("def make_optimizer(thing):\n    return torch.optim.SGD(thing, lr=0.1)\n", "cannot tell which `thing` is"),
        ("def make_optimizer(model, lr):\n    return None\n", "takes 2 argument(s)"),
        ("def make_scheduler():\n    return None\n", "make_scheduler(optimizer)"),
        ("def make_scheduler(optimizer):\n    return 0.5\n", "has no step() method"),
        ("def train_step(model, batch):\n    return 0.0\n", "train_step(model, batch, optimizer)"),
        ("clip_grad_norm = -1\n", "must be a positive number"),
        ("clip_grad_norm = 'yes'\n", "must be a positive number"),
        (
            "clip_grad_norm = 1.0\ndef train_step(model, batch, optimizer):\n    return 0.0\n",
            "Call torch.nn.utils.clip_grad_norm_ inside train_step",
        ),
        (
            "def make_optimizer(model):\n    return [torch.optim.SGD(model.parameters(), lr=0.1)] * 2\n",
            "returned 2 optimizers",
        ),
        (
            "def train_step(model, batch, optimizer):\n    x, y = batch\n    F.cross_entropy(model(x), y).backward()\n"
            "    optimizer.step()\n",
            "returned None at step 0; it must return the step's loss",
        ),
        (
            "def train_step(model, batch, optimizer):\n    x, y = batch\n    loss = F.cross_entropy(model(x), y)\n"
            "    loss.backward()\n    optimizer.step()\n    return F.cross_entropy(model(x), y, reduction='none')\n",
            "returned a tensor of shape (4,)",
        ),
        (
            "def train_step(model, batch, optimizer):\n    x, y = batch\n    return F.cross_entropy(model(x), y)\n",
            "without calling optimizer.step()",
        ),
    ],
)
def test_recipe_mistakes_are_one_paragraph_errors(write, body, phrase):
    path = write(body)
    with pytest.raises(ModelFileError) as info:
        analyze_file(path, AnalyzeConfig(steps=2, batch_size=4))
    message = str(info.value)
    assert phrase in message and "\n" not in message


def test_clip_option_is_checked_and_refused_with_a_train_step(write):
    with pytest.raises(ConfigError, match="`clip`"):
        AnalyzeConfig(clip=0.0).validate()
    with pytest.raises(ConfigError, match="`val_every`"):
        AnalyzeConfig(val_every=0).validate()
    path = write("def train_step(model, batch, optimizer):\n    return 0.0\n")
    with pytest.raises(ConfigError, match="`clip` cannot apply"):
        analyze_file(path, AnalyzeConfig(steps=1, batch_size=4, clip=1.0))


def test_validation_runs_about_ten_times_evenly_spaced_ending_at_the_last_step():
    assert sorted(validation_steps(50, None)) == list(range(4, 50, 5))
    assert sorted(validation_steps(150, None)) == list(range(14, 150, 15))
    assert sorted(validation_steps(7, None)) == list(range(7))
    assert sorted(validation_steps(20, 8)) == [7, 15, 19]


def test_validation_is_logged_at_its_steps_only(write):
    path = write(
        """
        def val_data():
            x = torch.randn(8, 4)
            return [(x, (x[:, 0] > 0).long())]
        """
    )
    record = analyze_file(path, AnalyzeConfig(steps=20, batch_size=4))
    steps, _ = record.scalar_series("val_loss")
    assert steps == list(range(1, 20, 2))
    every_fifth = analyze_file(path, AnalyzeConfig(steps=20, batch_size=4, val_every=5))
    assert every_fifth.scalar_series("val_loss")[0] == [4, 9, 14, 19]
