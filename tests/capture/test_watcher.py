"""The recorder on the awkward cases real training loops contain."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

import gradscope
from gradscope.errors import GradscopeError

from ..models import SmallResNet, all_hooks, classification_batches, image_batches, mlp, train_steps


def _train_resnet(watch: bool, steps: int = 10):
    torch.manual_seed(0)
    model = SmallResNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batches = image_batches(steps)
    losses = []
    watcher = gradscope.watch(model, optimizer=opt) if watch else None
    if watcher:
        watcher.attach()
    try:
        for x, y in batches:
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
            if watcher:
                watcher.log(loss=losses[-1])
    finally:
        record = watcher.detach() if watcher else None
    return losses, model.state_dict(), record


def test_observation_only_bitwise_identical_training():
    plain_losses, plain_state, _ = _train_resnet(watch=False)
    watched_losses, watched_state, record = _train_resnet(watch=True)
    assert watched_losses == plain_losses
    assert plain_state.keys() == watched_state.keys()
    for key in plain_state:
        assert torch.equal(plain_state[key], watched_state[key]), key
    assert record.steps == list(range(10))
    assert not record.hook_errors


def test_inplace_ops_and_reused_module_are_recorded():
    _, _, record = _train_resnet(watch=True, steps=2)
    # block.relu is called twice per forward (after bn1, and after the in-place residual add)
    assert record.series("act_calls", "block.relu") == [2.0, 2.0]
    assert record.series("backprop_norm", "block.relu")[0] > 0
    # conv outputs later modified in place by ReLU(inplace=True) still get their own statistics
    assert record.series("act_sparsity", "stem.1")[0] < 0.01  # BatchNorm output, before the ReLU
    assert 0.3 < record.series("act_sparsity", "stem.2")[0] < 0.7
    assert record.layers[:3] == ["stem.0", "stem.1", "stem.2"]
    assert record.layers[-1] == "head"


def test_no_hook_left_after_exit_or_exception():
    model = SmallResNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = all_hooks(model, opt)
    with gradscope.watch(model, optimizer=opt):
        assert all_hooks(model, opt) > before
        F.cross_entropy(model(torch.randn(2, 3, 8, 8)), torch.tensor([0, 1])).backward()
        opt.step()
    assert all_hooks(model, opt) == before

    with pytest.raises(RuntimeError, match="boom"):
        with gradscope.watch(model, optimizer=opt):
            model(torch.randn(2, 3, 8, 8))  # forward done, backward never comes
            raise RuntimeError("boom")
    assert all_hooks(model, opt) == before
    assert model.training


def test_explicit_attach_detach_and_double_attach():
    model = mlp()
    watcher = gradscope.Watcher(model)
    watcher.attach()
    with pytest.raises(GradscopeError, match="already attached"):
        watcher.attach()
    model(torch.randn(4, 8)).sum().backward()
    record = watcher.detach()
    assert all_hooks(model) == 0
    assert record.steps == [0]
    assert record.meta.grad_source == "backward"
    assert record.series("update_ratio", "0") == [None]


def test_frozen_unused_and_set_to_none_parameters_read_none():
    class TwoBranch(nn.Module):
        def __init__(self):
            super().__init__()
            self.frozen = nn.Linear(8, 8)
            self.used = nn.Linear(8, 3)
            self.unused = nn.Linear(8, 3)
            self.frozen.requires_grad_(False)

        def forward(self, x):
            return self.used(torch.relu(self.frozen(x)))

    model = TwoBranch()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradscope.watch(model, optimizer=opt) as run:
        train_steps(model, opt, classification_batches(2), set_to_none=True)
    record = run.record
    for name in ("frozen", "unused", "frozen.weight", "unused.bias"):
        assert record.series("grad_norm", name) == [None, None], name
        assert record.series("update_ratio", name) == [None, None], name
    assert all(v > 0 for v in record.series("grad_norm", "used"))
    assert record.module("unused").executed is False
    assert record.layers[-1] == "unused"  # never ran: listed after the modules in forward order


def test_gradient_accumulation_reads_the_accumulated_gradient():
    model = mlp()
    reference = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    micro = classification_batches(4, batch=8)
    with gradscope.watch(model, optimizer=opt) as run:
        for x, y in micro:
            (F.cross_entropy(model(x), y) / len(micro)).backward()
        opt.step()
        opt.zero_grad()
    for x, y in micro:
        (F.cross_entropy(reference(x), y) / len(micro)).backward()
    expected = torch.linalg.vector_norm(reference[0].weight.grad).item()
    assert run.record.series("grad_norm", "0.weight") == [pytest.approx(expected, rel=1e-6)]
    assert run.record.series("act_calls", "0") == [4.0]
    assert run.record.steps == [0]


def test_no_grad_eval_passes_between_steps_are_ignored():
    def run_once(evaluate: bool):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with gradscope.watch(model, optimizer=opt) as run:
            for x, y in classification_batches(3):
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
                opt.zero_grad()
                run.log(loss=loss.item())
                if evaluate:
                    model.eval()
                    with torch.no_grad():
                        val = F.cross_entropy(model(x * 2), y)
                    model.train()
                    run.log(val_loss=val.item())
        return run.record

    plain, with_eval = run_once(False), run_once(True)
    assert plain.layer_stats == with_eval.layer_stats
    steps, _ = with_eval.scalar_series("val_loss")
    assert steps == [0, 1, 2]  # attributed to the step just taken
    assert with_eval.scalar_series("loss")[0] == [0, 1, 2]


@pytest.mark.parametrize("reentrant", [True, False])
def test_activation_checkpointing_gives_one_record_per_module_per_step(reentrant):
    class Checkpointed(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU())
            self.head = nn.Linear(16, 3)

        def forward(self, x, use_checkpoint=True):
            if use_checkpoint:
                x = checkpoint(self.inner, x, use_reentrant=reentrant)
            else:
                x = self.inner(x)
            return self.head(x)

    def record_of(use_checkpoint: bool):
        torch.manual_seed(0)
        model = Checkpointed()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with gradscope.watch(model, optimizer=opt) as run:
            for x, y in classification_batches(2):
                x.requires_grad_(True)  # the re-entrant variant needs an input that requires grad
                F.cross_entropy(model(x, use_checkpoint), y).backward()
                opt.step()
                opt.zero_grad()
        return run.record

    checkpointed, plain = record_of(True), record_of(False)
    assert checkpointed.series("act_calls", "inner.0") == [1.0, 1.0]
    for name in ("inner.0", "inner.1", "inner.3", "head"):
        stats = ["act_mean", "act_sparsity", "backprop_norm"] + (["grad_norm"] if name in ("inner.0", "head") else [])
        for stat in stats:
            got, want = checkpointed.series(stat, name), plain.series(stat, name)
            assert None not in want, (name, stat)
            assert got == pytest.approx(want, rel=1e-5), (name, stat)


def test_dict_and_tuple_outputs():
    class DictOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(8, 4)

        def forward(self, x):
            return {"ids": torch.arange(3), "hidden": self.proj(x)}

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = DictOut()
            self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            h = self.enc(x)["hidden"].unsqueeze(1)
            out, _weights = self.attn(h, h, h)  # a tuple output
            return self.head(out.squeeze(1))

    model = Model()
    with gradscope.watch(model) as run:
        model(torch.randn(5, 8)).pow(2).mean().backward()
    record = run.record
    assert record.series("backprop_norm", "enc.proj")[0] > 0
    assert record.series("act_calls", "attn") == [1.0]
    assert record.series("backprop_norm", "attn")[0] > 0
    assert record.series("grad_norm", "attn")[0] > 0  # in_proj_weight is owned by attn itself


def _scaler_run(steps: int, watch_scaler: bool, overflow_at: int = 1):
    """A GradScaler loop whose loss overflows at one step; watched with or without scaler=."""
    torch.manual_seed(0)
    model = mlp()
    reference = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    batches = classification_batches(steps)
    with gradscope.watch(model, optimizer=opt, scaler=scaler if watch_scaler else None) as run:
        for i, (x, y) in enumerate(batches):
            loss = F.cross_entropy(model(x), y)
            if i == overflow_at:
                loss = loss * float("inf")  # forced overflow: GradScaler must skip this step
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
    return run.record, reference, batches


def test_grad_scaler_skipped_step_is_recorded_as_skipped_and_gradients_are_unscaled():
    record, reference, batches = _scaler_run(4, watch_scaler=True)
    assert record.steps == [0, 1, 2, 3]
    assert record.skipped_steps == [1]
    assert record.series("grad_norm", "0")[1] is None  # not a huge gradient: no gradient statistics
    assert record.series("act_calls", "0") == [1.0] * 4
    # step 0 is identical to an unscaled plain step
    x, y = batches[0]
    F.cross_entropy(reference(x), y).backward()
    expected = torch.linalg.vector_norm(reference[0].weight.grad).item()
    assert record.series("grad_norm", "0.weight")[0] == pytest.approx(expected, rel=1e-5)
    assert not any("discarded" in note for note in record.meta.notes)


def test_without_scaler_a_skipped_step_is_no_step_and_the_record_says_to_pass_scaler():
    # Without the scaler gradscope cannot tell a GradScaler skip from gradients thrown away
    # for another reason (a GAN): it never guesses an AMP overflow.
    record, reference, batches = _scaler_run(4, watch_scaler=False)
    assert record.steps == [0, 1, 2] and record.skipped_steps == []
    assert record.series("act_calls", "0") == [1.0] * 3  # the dropped pass is not merged into a step
    x, y = batches[0]
    F.cross_entropy(reference(x), y).backward()
    expected = torch.linalg.vector_norm(reference[0].weight.grad).item()
    assert record.series("grad_norm", "0.weight")[0] == pytest.approx(expected, rel=1e-5)  # read after unscale_
    assert record.series("backprop_norm", "0")[0] > 1000  # of the scaled loss
    assert any("discarded" in note and "scaler=" in note for note in record.meta.notes)
    assert "amp-overflow" not in gradscope.diagnose(record).codes()


def test_backprop_signal_is_unscaled_when_the_watcher_knows_the_scaler():
    torch.manual_seed(0)
    model = mlp()
    reference = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    batches = classification_batches(3)
    with gradscope.watch(model, optimizer=opt, scaler=scaler) as run:
        for i, (x, y) in enumerate(batches):
            loss = F.cross_entropy(model(x), y)
            if i == 1:
                loss = loss * float("inf")
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
    record = run.record
    assert record.skipped_steps == [1]
    out = reference[0](batches[0][0])
    out.retain_grad()
    F.cross_entropy(reference[1:](out), batches[0][1]).backward()
    assert record.series("backprop_norm", "0")[0] == pytest.approx(out.grad.norm().item(), rel=1e-5)
    assert record.series("backprop_norm", "0")[2] < 10  # after the skip the halved scale is divided out too
    assert not any("scaler=" in note for note in record.meta.notes)


def test_fp16_values_beyond_65504_do_not_overflow():
    model = nn.Sequential(nn.Linear(64, 64)).half()
    with torch.no_grad():
        model[0].weight.fill_(0.5)
        model[0].bias.zero_()
    x = torch.full((64, 64), 60.0, dtype=torch.float16)  # outputs 1920 each: norm ~ 1.2e5 > 65504
    with gradscope.watch(model) as run:
        out = model(x)
        (out.float().sum() * 100).backward()
    record = run.record
    assert record.series("act_mean", "0")[0] == pytest.approx(1920.0, rel=1e-3)
    assert record.series("backprop_norm", "0")[0] == pytest.approx(100 * 64, rel=1e-3)
    grad_norm = record.series("grad_norm", "0.weight")[0]
    expected = torch.linalg.vector_norm(model[0].weight.grad.float()).item()
    assert grad_norm == pytest.approx(expected, rel=1e-3)
    assert grad_norm > 65504


def test_every_n_steps_and_include_exclude():
    model = mlp((8, 16, 16, 16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradscope.watch(model, optimizer=opt, every=2, exclude=r"^1$", include=[r"^\d$"]) as run:
        train_steps(model, opt, classification_batches(5))
    assert run.record.steps == [0, 2, 4]
    assert "1" not in run.record.layers and "0" in run.record.layers
    with pytest.raises(GradscopeError, match="positive integer"):
        gradscope.watch(model, every=0)


def _module_hooks(model: nn.Module) -> dict[str, int]:
    return {
        name: len(m._forward_hooks) + len(m._forward_pre_hooks)
        for name, m in model.named_modules()
        if name and (m._forward_hooks or m._forward_pre_hooks)
    }


def test_between_recorded_steps_only_layers_with_silent_units_keep_a_hook():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    with torch.no_grad():
        model[0].bias.fill_(100.0)  # every unit of the first ReLU fires
        model[2].bias.fill_(100.0)
        model[2].bias[:3] = -100.0  # units 0-2 of the second ReLU never fire
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    hooks_after_step = []
    with gradscope.watch(model, optimizer=opt, every=4) as run:
        for x, y in classification_batches(9, features=4, classes=2, batch=16):
            F.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
            hooks_after_step.append(_module_hooks(model))
    # the step in progress after steps 3 and 7 is recorded: every layer hooked
    assert set(hooks_after_step[3]) == {"0", "1", "2", "3", "4"}
    # between recorded steps: nothing on the layers whose units all fired, the dead ReLU still watched
    assert hooks_after_step[1] == hooks_after_step[5] == {"3": 1}
    assert _module_hooks(model) == {}
    assert run.record.steps == [0, 4, 8]
    assert run.record.series("act_dead_frac", "3") == [pytest.approx(3 / 8)] * 3
    assert run.record.series("act_dead_frac", "1") == [0.0] * 3


def test_between_recorded_steps_the_dead_unit_window_reads_functional_relus_too():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 3), nn.Linear(3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(F.relu(self.fc1(x)))

    model = Net()
    with torch.no_grad():
        model.fc1.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 0]]))
        model.fc1.bias.copy_(torch.tensor([0.0, 0.0, -1.0]))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with gradscope.watch(model, optimizer=opt, every=3) as run:
        for x in (-torch.ones(2, 4), -torch.ones(2, 4), torch.ones(2, 4), -torch.ones(2, 4)):
            model(x).sum().backward()
            opt.step()
            opt.zero_grad()
    assert run.record.steps == [0, 3]
    # step 0 alone: all 3 silent; steps 1-3 include a positive batch between recorded steps
    assert run.record.series("act_dead_frac", "fc1→relu") == [pytest.approx(1.0), pytest.approx(1 / 3)]


def test_gan_with_every_n_records_the_steps_every_1_records_at_those_steps():
    # Between recorded steps the gradient hooks are off, so a discriminator backward whose
    # gradients the generator step throws away is noticed only on recorded steps: the recorded
    # steps must still be exactly those of every=1 (no void step counted, no AMP skip invented).
    from ..corpus.gan import _train

    every_step, every_third = _train(every=1), _train(every=3)
    for network in ("generator", "discriminator"):
        full, sparse = every_step[network], every_third[network]
        assert full.steps == list(range(30)) and sparse.steps == list(range(0, 30, 3))
        assert sparse.skipped_steps == []
        for name in ("grad_norm", "update_ratio", "act_mean", "backprop_norm"):
            layer = sparse.layers[-1]
            assert sparse.series(name, layer) == full.series(name, layer)[::3], (network, name)
    # the discriminator's discarded backward passes: one a step, counted while recorded only
    assert any(note.startswith("29 backward pass(es) reached") for note in every_step["discriminator"].meta.notes)
    assert any(note.startswith("9 backward pass(es) during recorded steps") for note in every_third["discriminator"].meta.notes)


def test_deepcopy_and_torch_save_of_a_watched_model():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradscope.watch(model, optimizer=opt) as run:
        ema = copy.deepcopy(model)
        buffer = io.BytesIO()
        torch.save(model, buffer)
        for x, y in classification_batches(2):
            F.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
            ema(x * 100).sum()  # the copy's hooks are inert: nothing reaches this run
    assert run.record.series("act_calls", "0") == [1.0, 1.0]
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert loaded(torch.randn(2, 8)).shape == (2, 3)


def test_an_error_inside_gradscope_is_recorded_not_raised(monkeypatch):
    from gradscope import measure

    def broken(self, *args, **kwargs):
        raise ValueError("synthetic failure in a statistic")

    monkeypatch.setattr(measure.StepAccumulator, "add_activation", broken)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradscope.watch(model, optimizer=opt) as run:
        train_steps(model, opt, classification_batches(2))
    errors = run.record.hook_errors
    assert errors and all("synthetic failure" in e.error for e in errors)
    assert errors[0].count == 2 and errors[0].where.startswith("forward:")
    assert run.record.series("grad_norm", "0")[0] > 0  # everything else still recorded


def test_names_are_those_of_the_unwrapped_model():
    model = mlp()
    compiled = torch.compile(model)  # not run: compiling is slow on CI; the wrapper is what matters
    with gradscope.watch(compiled) as run:
        pass
    assert run.record.layers[0] == "0"
    assert not any(name.startswith("_orig_mod") for name in run.record.layers)


def test_record_is_readable_during_the_run():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradscope.watch(model, optimizer=opt) as run:
        for x, y in classification_batches(3):
            F.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
            assert run.record.steps == list(range(run.step))
