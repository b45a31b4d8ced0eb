"""Several networks in one model file (a GAN): one watcher and one record per network an optimizer
trains, named by attribute or by make_optimizer's dict key; the whole model and a note when the
optimizers' parameters cannot be split."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from torch import nn

from gradscope.analyze import AnalyzeConfig, analyze_file, analyze_networks
from gradscope.errors import ConfigError, ModelFileError
from gradscope.network_split import split_networks

STEPS = 4

# A tiny GAN in the DCGAN example's loop; it keeps what each optimizer used, for the cross-check.
GAN = """
import torch
import torch.nn.functional as F
from torch import nn

USED = {"generator": [], "discriminator": []}
LOSSES = {"generator": [], "discriminator": []}

class GAN(nn.Module):
    def __init__(self):
        super().__init__()
        self.generator = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
        self.discriminator = nn.Sequential(nn.Linear(2, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1))

def build_model():
    return GAN()

def make_batch(n):
    return torch.randn(n, 2) + 1.0, torch.randn(n, 3)

def train_step(model, batch, optimizers):
    real, noise = batch
    opt_g, opt_d = OPTIMIZERS(optimizers)
    G, D = model.generator, model.discriminator
    ones, zeros = torch.ones(len(real), 1), torch.zeros(len(real), 1)
    D.zero_grad()
    fake = G(noise)
    loss_d = (F.binary_cross_entropy_with_logits(D(real), ones)
              + F.binary_cross_entropy_with_logits(D(fake.detach()), zeros))
    loss_d.backward()
    USED["discriminator"].append(D[0].weight.grad.norm().item())
    opt_d.step()
    G.zero_grad()
    loss_g = F.binary_cross_entropy_with_logits(D(fake), ones)
    loss_g.backward()
    USED["generator"].append(G[0].weight.grad.norm().item())
    opt_g.step()
    LOSSES["generator"].append(loss_g.item())
    LOSSES["discriminator"].append(loss_d.item())
    return RETURN
"""

TUPLE = """
def make_optimizer(model):
    return (torch.optim.Adam(model.generator.parameters(), lr=1e-3, betas=(0.5, 0.999)),
            torch.optim.Adam(model.discriminator.parameters(), lr=1e-3, betas=(0.5, 0.999)))
OPTIMIZERS = lambda made: made
"""


@pytest.fixture
def gan_file(tmp_path):
    def write(optimizers: str = TUPLE, returns: str = '{"generator": loss_g, "discriminator": loss_d}'):
        path = tmp_path / "gan.py"
        path.write_text(textwrap.dedent(GAN).replace("RETURN", returns) + textwrap.dedent(optimizers))
        return path

    return write


def _module():
    return sys.modules["__gradscope_model__"]


def test_each_optimizer_gets_a_watcher_on_the_network_it_trains(gan_file):
    runs = analyze_networks(gan_file(), AnalyzeConfig(steps=STEPS, batch_size=8))
    assert [run.name for run in runs] == ["generator", "discriminator"]
    generator, discriminator = (run.record for run in runs)
    for name, record in (("generator", generator), ("discriminator", discriminator)):
        # one step per iteration each, the discriminator's discarded backward passes neither steps nor AMP skips
        assert record.steps == list(range(STEPS)), name
        assert record.skipped_steps == [], name
        assert [m.name for m in record.modules] == ["0", "1", "2"], name
        assert record.meta.options["network"] == name
        assert record.meta.optimizer.startswith("Adam")
        # the gradient each optimizer used, read by plain autograd in the loop itself
        assert record.series("grad_norm", "0.weight") == pytest.approx(_module().USED[name], rel=1e-5), name
        # each network logs its own loss from train_step's dict
        assert record.scalar_series("loss")[1] == pytest.approx(_module().LOSSES[name]), name
    assert generator.meta.model_class == discriminator.meta.model_class == "Sequential"
    assert any("discarded without an optimizer step" in note for note in discriminator.meta.notes)
    assert not any("discarded without an optimizer step" in note for note in generator.meta.notes)
    assert any("record of discriminator" in note and "generator has a record" in note for note in discriminator.meta.notes)


def test_a_dict_of_optimizers_names_the_networks_by_key(gan_file):
    optimizers = """
    def make_optimizer(model):
        return {"G": torch.optim.SGD(model.generator.parameters(), lr=0.01),
                "D": torch.optim.SGD(model.discriminator.parameters(), lr=0.01)}
    OPTIMIZERS = lambda made: (made["G"], made["D"])
    """
    runs = analyze_networks(gan_file(optimizers, returns="loss_g"), AnalyzeConfig(steps=2, batch_size=4))
    assert [run.name for run in runs] == ["G", "D"]
    assert runs[0].record.series("grad_norm", "0.weight") == pytest.approx(_module().USED["generator"], rel=1e-5)
    assert runs[1].record.series("grad_norm", "0.weight") == pytest.approx(_module().USED["discriminator"], rel=1e-5)
    # one loss returned: logged to every network
    assert runs[0].record.scalar_series("loss")[1] == runs[1].record.scalar_series("loss")[1] == pytest.approx(
        _module().LOSSES["generator"])


@pytest.mark.parametrize(
    "optimizers, why",
    [
        (  # the first optimizer trains across both networks
            "def make_optimizer(model):\n    return (torch.optim.SGD([*model.generator.parameters(), "
            "*model.discriminator[0].parameters()], lr=0.01),\n"
            "            torch.optim.SGD(model.discriminator[2].parameters(), lr=0.01))\n",
            "the parameters of optimizer #1 span the whole model",
        ),
        (
            "def make_optimizer(model):\n    return (torch.optim.SGD(model.parameters(), lr=0.01),\n"
            "            torch.optim.SGD(model.discriminator.parameters(), lr=0.01))\n",
            "optimizers #1 and #2 share parameters",
        ),
        (
            "def make_optimizer(model):\n    return (torch.optim.SGD(model.discriminator.parameters(), lr=0.01),\n"
            "            torch.optim.SGD(model.discriminator.parameters(), lr=0.01))\n",
            "optimizers #1 and #2 share parameters",
        ),
    ],
)
def test_optimizers_that_cannot_be_split_watch_the_whole_model_with_a_note(gan_file, optimizers, why):
    runs = analyze_networks(gan_file(optimizers + "OPTIMIZERS = lambda made: made\n", returns="loss_g"),
                            AnalyzeConfig(steps=2, batch_size=4))
    assert len(runs) == 1 and runs[0].name == "model"
    record = runs[0].record
    assert record.meta.model_class == "GAN" and "generator.0" in [m.name for m in record.modules]
    assert record.steps == [0, 1]  # the first optimizer's steps
    note = next(n for n in record.meta.notes if "could not be split" in n)
    assert why in note and "watched the whole model with the first optimizer (SGD)" in note
    assert "network" not in record.meta.options


def test_split_networks_finds_the_smallest_module_and_refuses_nesting():
    model = nn.Module()
    model.nets = nn.ModuleDict({"g": nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), "d": nn.Linear(2, 1)})
    model.frozen = nn.Linear(2, 2)  # trained by no optimizer: simply not watched
    g = torch.optim.SGD(model.nets["g"].parameters(), lr=0.1)
    d = torch.optim.SGD(model.nets["d"].parameters(), lr=0.1)
    split = split_networks(model, [g, d], [g, d])
    assert split.note is None
    assert [(p.name, p.module, p.optimizer) for p in split.parts] == [("nets.g", model.nets["g"], g), ("nets.d", model.nets["d"], d)]
    outer = torch.optim.SGD([*model.nets["g"][0].parameters(), *model.nets["d"].parameters()], lr=0.1)  # all of nets
    inner = torch.optim.SGD(model.nets["g"][1].parameters(), lr=0.1)
    nested = split_networks(model, [outer, inner], [outer, inner])
    assert [p.name for p in nested.parts] == ["model"] and nested.parts[0].module is model
    assert "network of optimizer #2 (nets.g.1) lies inside the network of optimizer #1 (nets)" in nested.note
    stray = nn.Linear(2, 2)
    outside = torch.optim.SGD(stray.parameters(), lr=0.1)
    assert "neither in the model build_model() returned" in split_networks(model, [g, outside], [g, outside]).note
    found = split_networks(model, [g, outside], [g, outside], elsewhere={"netD": stray, "frozen": model.frozen})
    assert [(p.name, p.module) for p in found.parts] == [("nets.g", model.nets["g"]), ("netD", stray)]
    across = torch.optim.SGD([*stray.parameters(), *model.frozen.parameters()], lr=0.1)
    assert "trains parameters of model, netD at once" in split_networks(model, [g, across], [g, across],
                                                                        elsewhere={"netD": stray}).note
    assert split_networks(model, g, [g]).parts[0].module is model  # one optimizer: the whole model, no note
    assert split_networks(model, g, [g]).note is None


def test_analyze_file_says_to_use_analyze_networks_before_training(gan_file):
    with pytest.raises(ConfigError, match=r"trains 2 networks \(generator, discriminator\).*analyze_networks"):
        analyze_file(gan_file(), AnalyzeConfig(steps=2, batch_size=4))
    assert _module().LOSSES["generator"] == []  # refused before the first step


def test_a_dict_of_losses_must_name_every_network(gan_file):
    with pytest.raises(ModelFileError, match=r"returned a dict with keys 'G' at step 0.*keyed 'generator', 'discriminator'"):
        analyze_networks(gan_file(returns='{"G": loss_g}'), AnalyzeConfig(steps=2, batch_size=4))


def test_a_dict_of_losses_from_optimizers_that_cannot_be_split_says_why(gan_file):
    """The networks' own losses, but the optimizers share parameters: the error says why gradscope
    watches one network, before the user wonders why their dict was refused."""
    optimizers = (
        "def make_optimizer(model):\n    return (torch.optim.SGD(model.parameters(), lr=0.01),\n"
        "            torch.optim.SGD(model.discriminator.parameters(), lr=0.01))\n"
        "OPTIMIZERS = lambda made: made\n"
    )
    with pytest.raises(ModelFileError, match=r"one loss per network, but gradscope watches the whole model as one "
                                             r"network, because make_optimizer returned 2 optimizers.*share parameters"):
        analyze_networks(gan_file(optimizers, returns='{"generator": loss_g, "discriminator": loss_d}'),
                         AnalyzeConfig(steps=2, batch_size=4))


def test_a_network_kept_in_a_module_level_variable_is_found_there(tmp_path):
    path = tmp_path / "gan_globals.py"
    path.write_text(textwrap.dedent("""
        import torch
        import torch.nn.functional as F
        from torch import nn

        netD = nn.Sequential(nn.Linear(2, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1))  # outside the model

        def build_model():
            return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))  # the generator

        def make_batch(n):
            return torch.randn(n, 2), torch.randn(n, 3)

        def make_optimizer(model):
            return torch.optim.Adam(model.parameters()), torch.optim.Adam(netD.parameters())

        def train_step(netG, batch, optimizers):
            real, noise = batch
            opt_g, opt_d = optimizers
            netD.zero_grad()
            fake = netG(noise)
            loss_d = F.softplus(-netD(real)).mean() + F.softplus(netD(fake.detach())).mean()
            loss_d.backward()
            opt_d.step()
            netG.zero_grad()
            loss_g = F.softplus(-netD(fake)).mean()
            loss_g.backward()
            opt_g.step()
            return {"model": loss_g, "netD": loss_d}
    """))
    runs = analyze_networks(path, AnalyzeConfig(steps=3, batch_size=4))
    assert [run.name for run in runs] == ["model", "netD"]
    assert [run.record.steps for run in runs] == [[0, 1, 2], [0, 1, 2]]
    assert runs[1].record.skipped_steps == [] and [m.name for m in runs[1].record.modules] == ["0", "1", "2"]
