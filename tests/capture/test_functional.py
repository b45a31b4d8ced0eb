"""Activations called as functions in forward (F.relu, torch.tanh, torch.sigmoid) are measured where a
Linear/Conv layer reads them, checked against plain torch, and get findings as modules do."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradscope
from tests.models import all_hooks


class FunctionalNet(nn.Module):
    def __init__(self, act=F.relu, dropout: float = 0.0):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 3)
        self.act, self.dropout = act, dropout

    def forward(self, x):
        h = F.dropout(self.act(self.fc1(x)), self.dropout, self.training)
        return self.fc3(torch.flatten(self.act(self.fc2(h)), 1))


def _batches(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g)) for _ in range(n)]


def _train(model, batches, watched=True, **options):
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    run = gradscope.watch(model, optimizer=opt, **options) if watched else None
    if run is not None:
        run.attach()
    try:
        for x, y in batches:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        record = run.detach() if run is not None else None
    return record, losses, opt


def test_a_functional_relu_gets_an_entry_named_after_the_layer_that_feeds_it():
    torch.manual_seed(0)
    record, _, _ = _train(FunctionalNet(), _batches())
    entries = [(m.name, m.type, m.activation) for m in record.modules if m.type.startswith("F.")]
    assert entries == [("fc1→relu", "F.relu", "relu"), ("fc2→relu", "F.relu", "relu")]
    assert record.layers.index("fc1") < record.layers.index("fc1→relu") < record.layers.index("fc2")


def test_dead_units_and_sparsity_match_plain_torch():
    torch.manual_seed(0)
    model = FunctionalNet()
    with torch.no_grad():
        model.fc1.bias[:12] = -50.0  # 12 of 16 units never fire
    batches = _batches(1)
    x, _ = batches[0]
    with torch.no_grad():
        reference = F.relu(model.fc1(x))  # the step's forward runs before the update
    record, _, _ = _train(model, batches)
    assert record.series("act_dead_frac", "fc1→relu") == [(reference.amax(0) == 0).float().mean().item()] == [0.75]
    assert record.series("act_sparsity", "fc1→relu")[0] == pytest.approx((reference == 0).float().mean().item())
    assert record.series("act_mean", "fc1→relu")[0] == pytest.approx(reference.mean().item(), rel=1e-6)


def test_functional_tanh_saturation_matches_plain_torch():
    torch.manual_seed(0)
    model = FunctionalNet(act=torch.tanh)
    with torch.no_grad():
        model.fc1.weight.mul_(20)
    batches = _batches(1)
    with torch.no_grad():
        reference = torch.tanh(model.fc1(batches[0][0]))
    record, _, _ = _train(model, batches)
    assert record.module("fc1→tanh").type == "F.tanh"
    expected = (reference.abs() > 0.99).float().mean().item()
    assert expected > 0.3 and record.series("act_saturation", "fc1→tanh")[0] == pytest.approx(expected)


def test_activation_modules_are_not_measured_twice_and_views_and_dropout_are_seen_through():
    torch.manual_seed(0)
    modules = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
    record, _, _ = _train(modules, _batches(2))
    assert not [m for m in record.modules if m.type.startswith("F.")]
    through_dropout, _, _ = _train(FunctionalNet(dropout=0.5), _batches(2))
    assert "fc1→relu" in through_dropout.layers  # F.relu -> F.dropout -> fc2
    sigmoid_through_dropout, _, _ = _train(FunctionalNet(act=torch.sigmoid, dropout=0.5), _batches(2))
    # dropout rescales values, so a sigmoid's saturation cannot be read behind it; without dropout it is
    assert "fc1→sigmoid" not in sigmoid_through_dropout.layers and "fc2→sigmoid" in sigmoid_through_dropout.layers


def test_functional_capture_is_observation_only_and_leaves_no_hook():
    torch.manual_seed(0)
    plain_model = FunctionalNet(dropout=0.3)
    torch.manual_seed(0)
    watched_model = FunctionalNet(dropout=0.3)
    torch.manual_seed(5)
    _, plain, _ = _train(plain_model, _batches(3), watched=False)
    torch.manual_seed(5)
    _, watched, opt = _train(watched_model, _batches(3))
    assert plain == watched  # bitwise the same losses
    assert all(torch.equal(a, b) for a, b in zip(plain_model.parameters(), watched_model.parameters()))
    assert all_hooks(watched_model, opt) == 0


def test_functional_capture_can_be_turned_off():
    record, _, _ = _train(FunctionalNet(), _batches(1), functional_activations=False)
    assert not [m for m in record.modules if m.type.startswith("F.")]


def test_dead_relu_finding_for_a_functional_relu_names_the_feeding_layer_and_the_code_to_change():
    torch.manual_seed(0)
    model = FunctionalNet()
    with torch.no_grad():
        model.fc1.bias.fill_(-10.0)
    record, _, _ = _train(model, _batches(4))
    [finding] = [f for f in gradscope.diagnose(record) if f.code == "dead-relu"]
    # fc1's units never fire; fc2 then sees only zeros, so its units with a negative bias die too
    assert finding.layers[0] == "fc1→relu" and finding.evidence["dead_fraction"]["fc1→relu"] == 1.0
    assert "F.leaky_relu(x, 0.01) instead of F.relu(x)" in finding.snippet
    assert "for name in ['fc1'," in finding.snippet  # Kaiming init for the layers that feed them
    compile(finding.snippet, "<snippet>", "exec")


def test_a_saturated_output_activation_is_reported_as_an_output():
    torch.manual_seed(0)
    generator = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8), nn.Tanh())
    with torch.no_grad():
        generator[2].weight.mul_(40)
    opt = torch.optim.Adam(generator.parameters(), lr=1e-4)
    with gradscope.watch(generator, optimizer=opt) as run:
        for _ in range(3):
            loss = generator(torch.randn(32, 8)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    [finding] = [f for f in gradscope.diagnose(run.record) if f.code == "saturation"]
    assert finding.layers == ["3"] and finding.evidence["output"] is True and finding.severity == "warning"
    assert "output activation `3` (Tanh)" in finding.title and "after `2`" in finding.message


# ---- an activation function applied last: the model's own output, read by no layer -----------------------
class OutputActivationNet(nn.Module):
    """`return torch.sigmoid(self.out(h))`: a classifier's probabilities, a VAE's pixels, a generator's tanh."""

    def __init__(self, final=torch.sigmoid, width: int = 4):
        super().__init__()
        self.fc1, self.out = nn.Linear(8, 16), nn.Linear(16, width)
        self.final = final

    def forward(self, x):
        return self.final(self.out(F.relu(self.fc1(x))))


def _fit(model, batches, loss_fn, lr=0.05, **options):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    with gradscope.watch(model, optimizer=opt, **options) as run:
        for x, y in batches:
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return run.record


@pytest.mark.parametrize("final, saturated", [(torch.sigmoid, lambda y: (y < 0.01) | (y > 0.99)),
                                              (torch.tanh, lambda y: np.abs(y) > 0.99)])
def test_a_final_activation_function_is_measured_on_the_output_and_matches_numpy(final, saturated):
    torch.manual_seed(0)
    model = OutputActivationNet(final)
    with torch.no_grad():
        model.out.weight.mul_(20)  # part of the outputs in the flat region, part not
    x = torch.randn(32, 8)
    y = torch.rand(32, 4)
    with torch.no_grad():
        reference = final(model.out(F.relu(model.fc1(x)))).numpy().astype(np.float64)  # before the update
    record = _fit(model, [(x, y)], F.mse_loss)
    kind = final.__name__
    assert [(m.name, m.type) for m in record.modules][-2:] == [("out", "Linear"), (f"out→{kind}", f"F.{kind}")]
    name = f"out→{kind}"
    expected = saturated(reference).mean()
    assert 0.1 < expected < 0.9
    assert record.series("act_saturation", name)[0] == pytest.approx(expected)
    assert record.series("act_mean", name)[0] == pytest.approx(reference.mean(), rel=1e-5, abs=1e-7)
    assert record.series("act_std", name)[0] == pytest.approx(reference.std(), rel=1e-5)
    assert record.series("act_calls", name) == [1.0]


def test_a_saturated_tanh_generator_output_gets_the_output_finding_not_a_hidden_layer_one():
    torch.manual_seed(0)
    generator = OutputActivationNet(torch.tanh, width=8)
    with torch.no_grad():
        generator.out.weight.mul_(40)
    images = torch.rand(32, 8) * 2 - 1
    record = _fit(generator, [(torch.randn(32, 8), images) for _ in range(3)], F.mse_loss, lr=1e-4)
    [finding] = [f for f in gradscope.diagnose(record) if f.code == "saturation"]
    assert finding.layers == ["out→tanh"] and finding.evidence["output"] is True and finding.severity == "warning"
    assert "output activation `out→tanh` (F.tanh)" in finding.title and "after `out`" in finding.message
    assert "pinned at -1 or +1" in finding.message and "not a hidden layer" in finding.message
    assert "[-1, 1]" in finding.recommendation and "for name in ['out']" in finding.snippet
    compile(finding.snippet, "<snippet>", "exec")


def test_a_saturated_sigmoid_classifier_output_says_confident_predictions_and_logits():
    torch.manual_seed(0)
    model = OutputActivationNet(torch.sigmoid, width=1)
    with torch.no_grad():
        model.out.weight.mul_(60)
    batches = [(torch.randn(32, 8), torch.randint(0, 2, (32, 1)).float()) for _ in range(3)]
    record = _fit(model, batches, F.binary_cross_entropy, lr=1e-4)
    [finding] = [f for f in gradscope.diagnose(record) if f.code == "saturation"]
    assert finding.layers == ["out→sigmoid"] and finding.severity == "warning"
    assert "confident" in finding.message and "BCEWithLogitsLoss" in finding.recommendation
    compile(finding.snippet, "<snippet>", "exec")


def test_a_healthy_model_with_a_final_sigmoid_raises_nothing():
    torch.manual_seed(0)
    model = OutputActivationNet(torch.sigmoid, width=1)
    g = torch.Generator().manual_seed(3)
    batches = []
    for _ in range(8):
        x = torch.randn(32, 8, generator=g)
        batches.append((x, (x[:, :1] > 0).float()))
    record = _fit(model, batches, F.binary_cross_entropy, lr=0.1)
    assert record.series("act_saturation", "out→sigmoid") == [0.0] * 8  # measured, and calm
    diagnosis = gradscope.diagnose(record)
    assert diagnosis.at_least("warning") == []
    assert "saturation" not in diagnosis.codes()


class ReadAndReturned(nn.Module):
    """The final tanh is also read by a layer: measured once, at that layer's input."""

    def __init__(self):
        super().__init__()
        self.fc, self.head = nn.Linear(8, 16), nn.Linear(16, 2)

    def forward(self, x):
        h = torch.tanh(self.fc(x))
        return h, self.head(h)


def test_a_final_activation_is_measured_once_when_a_module_or_a_layer_already_measured_it():
    torch.manual_seed(0)
    as_module = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4), nn.Sigmoid())
    record = _fit(as_module, [(torch.randn(32, 8), torch.rand(32, 4))], F.mse_loss)
    assert not [m for m in record.modules if m.type.startswith("F.")]
    assert record.series("act_calls", "3") == [1.0]

    model = ReadAndReturned()
    record = _fit(model, [(torch.randn(32, 8), torch.rand(32, 16))], lambda out, y: F.mse_loss(out[0], y))
    assert [m.name for m in record.modules if m.type.startswith("F.")] == ["fc→tanh"]
    assert record.series("act_calls", "fc→tanh") == [1.0]


def test_no_output_entry_without_functional_capture():
    record = _fit(OutputActivationNet(), [(torch.randn(32, 8), torch.rand(32, 4))], F.mse_loss,
                  functional_activations=False)
    assert record.layers == ["fc1", "out"]
