"""The Hugging Face callback in a real Trainer run on CPU: a tiny GPT-2 from a config, random tokens."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradscope

from ..models import all_hooks
from . import common
from .common import ACCUMULATE, CLIP, LR, batches, deep_sigmoid

transformers = pytest.importorskip("transformers", reason="the transformers extra: pip install -e .[test]")
pytest.importorskip("accelerate", reason="the transformers extra: pip install -e .[test]")
from gradscope.integrations.transformers import GradscopeCallback  # noqa: E402

STEPS, BATCH, TOKENS, VOCAB = 4, 2, 12, 64


class Examples(torch.utils.data.IterableDataset):
    """Consumed in this order by the Trainer (no shuffling), so a plain loop can replay it."""

    def __init__(self, items: list[dict]) -> None:
        self.items = items

    def __iter__(self):
        return iter(self.items)


def _token_batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [torch.randint(0, VOCAB, (BATCH, TOKENS), generator=g) for _ in range(STEPS * ACCUMULATE)]


def _gpt2() -> nn.Module:
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=TOKENS,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config)


def _arguments(tmp_path, **overrides) -> "transformers.TrainingArguments":
    options = dict(
        output_dir=str(tmp_path / "out"), max_steps=STEPS, per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=ACCUMULATE, max_grad_norm=CLIP, learning_rate=LR, optim="sgd",
        lr_scheduler_type="constant", logging_steps=1, report_to="none", save_strategy="no", use_cpu=True,
        disable_tqdm=True, seed=0,
    )
    options.update(overrides)
    return transformers.TrainingArguments(**options)


def _train(model, items, callback, tmp_path, first: bool = False, **overrides):
    arguments = _arguments(tmp_path, **overrides)
    trainer = transformers.Trainer(model=model, args=arguments, train_dataset=Examples(items), callbacks=[callback])
    if first:  # before the report_to callbacks, so they see the summary scalars (as the README says)
        trainer.callback_handler.callbacks.remove(callback)
        trainer.callback_handler.callbacks.insert(0, callback)
    trainer.train()
    return trainer


@pytest.fixture(scope="module")
def gpt2_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("hf")
    tokens = _token_batches()
    model = _gpt2()
    hooks_before = all_hooks(model)
    callback = GradscopeCallback(path=tmp_path / "run.json")
    items = [{"input_ids": row, "labels": row} for ids in tokens for row in ids]
    tensorboard = tmp_path / "out"  # the Trainer's TensorBoard callback writes under output_dir
    trainer = _train(model, items, callback, tmp_path, first=True, report_to="tensorboard")

    # The same training by hand: HF sums the token losses of a window over its token count.
    reference_model = _gpt2()
    opt = torch.optim.SGD(reference_model.parameters(), lr=LR)
    with gradscope.watch(reference_model, optimizer=opt) as run:
        for start in range(0, len(tokens), ACCUMULATE):
            window = tokens[start:start + ACCUMULATE]
            count = sum(ids.numel() for ids in window)  # what this Trainer divides the summed token losses by
            for ids in window:
                reference_model(input_ids=ids, labels=ids, num_items_in_batch=torch.tensor(count)).loss.backward()
            torch.nn.utils.clip_grad_norm_(reference_model.parameters(), CLIP)
            opt.step()
            opt.zero_grad()
    return callback, trainer, model, hooks_before, run.record, tensorboard


def test_one_record_step_per_optimizer_step_matching_a_plain_loop_before_and_after_clipping(gpt2_run):
    callback, trainer, _, _, reference, _ = gpt2_run
    assert trainer.state.global_step == STEPS
    assert callback.record.steps == list(range(STEPS))
    common.assert_same_gradient_statistics(callback.record, reference)
    common.assert_clipped_at(callback.record, CLIP)  # max_grad_norm acted, and the record saw past it


def test_every_hook_is_gone_and_the_record_is_saved(gpt2_run, tmp_path_factory):
    callback, trainer, model, hooks_before, _, _ = gpt2_run
    assert all_hooks(model) == hooks_before
    assert all_hooks(model, trainer.optimizer.optimizer) == hooks_before
    saved = gradscope.RunRecord.load(callback.session.path)
    assert saved.steps == callback.record.steps and callback.diagnosis is not None


def test_summary_scalars_go_into_the_trainers_logs_and_its_tensorboard(gpt2_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    callback, trainer, _, _, _, tensorboard = gpt2_run
    training_logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(training_logs) == STEPS
    totals = [entry["gradscope/grad_norm_total"] for entry in training_logs]
    assert totals == pytest.approx([s["gradscope/grad_norm_total"] for s in map(_summary(callback), range(STEPS))])
    assert not any(key.startswith(("grad_rms/", "backprop_norm/")) for entry in training_logs for key in entry)
    folder = next(tensorboard.rglob("events.out.tfevents.*")).parent
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    logged = [e.value for e in events.Scalars("train/gradscope/grad_norm_total")]
    assert logged == pytest.approx(totals, rel=1e-6)


def _summary(callback):
    from gradscope.summary import summary_scalars

    return lambda index: summary_scalars(callback.record, index)


class SigmoidClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = deep_sigmoid()

    def forward(self, x, labels=None):
        logits = self.net(x)
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


def test_deep_sigmoid_in_a_trainer_is_diagnosed_vanishing_and_matches_a_plain_loop(tmp_path):
    data = batches(STEPS * ACCUMULATE)
    torch.manual_seed(0)
    model = SigmoidClassifier()
    callback = GradscopeCallback()
    items = [{"x": x[i], "labels": y[i]} for x, y in data for i in range(len(y))]
    _train(model, items, callback, tmp_path, per_device_train_batch_size=len(data[0][1]))
    assert "vanishing-gradients" in callback.diagnosis.codes()
    torch.manual_seed(0)
    reference = common.plain_loop_record(deep_sigmoid(), data)
    common.assert_same_gradient_statistics(callback.record, reference, prefix="net.")


def test_fail_on_error_stops_training_and_leaves_no_hook(tmp_path):
    from gradscope.integrations.session import FindingThresholdError

    data = batches(STEPS * ACCUMULATE)
    torch.manual_seed(0)
    model = SigmoidClassifier()
    hooks_before = all_hooks(model)
    callback = GradscopeCallback(fail_on="error", html=tmp_path / "report.html")
    items = [{"x": x[i], "labels": y[i]} for x, y in data for i in range(len(y))]
    with pytest.raises(FindingThresholdError, match="vanishing-gradients"):
        _train(model, items, callback, tmp_path, per_device_train_batch_size=len(data[0][1]), max_steps=50)
    assert all_hooks(model) == hooks_before
    assert len(callback.record.steps) < 50 and (tmp_path / "report.html").is_file()


def test_budget_through_the_trainer_logs_only_the_steps_it_recorded(tmp_path):
    data = batches(STEPS * ACCUMULATE)
    torch.manual_seed(0)
    model = SigmoidClassifier()
    callback = GradscopeCallback(budget=0.02)
    items = [{"x": x[i], "labels": y[i]} for x, y in data for i in range(len(y))]
    trainer = _train(model, items, callback, tmp_path, per_device_train_batch_size=len(data[0][1]), first=True)
    record = callback.record
    # A recorded step of this tiny model costs about a step: far above 2 %, so few are recorded.
    assert record.steps[0] == 0 and len(record.steps) < STEPS and len(record.intervals) == len(record.steps)
    logged = [entry["gradscope/grad_norm_total"] for entry in trainer.state.log_history if "gradscope/grad_norm_total" in entry]
    assert logged == pytest.approx([_summary(callback)(i)["gradscope/grad_norm_total"] for i in range(len(record.steps))])
