"""The Lightning callback on a GAN: one optimizer per network, manual optimization, a record each."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn

from ..models import all_hooks

L = pytest.importorskip("lightning.pytorch", reason="the lightning extra: pip install -e .[test]")
from gradscope import RunRecord  # noqa: E402
from gradscope.integrations.lightning import GradscopeCallback  # noqa: E402

STEPS, NOISE, BATCH = 8, 4, 32


class GAN(L.LightningModule):
    """A small MLP GAN on a ring of Gaussians, trained the way Lightning's GAN example is: manual
    optimization, the discriminator's step and then the generator's in each training_step."""

    def __init__(self, dead_discriminator: bool = False, shared_optimizer: bool = False) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.shared_optimizer = shared_optimizer
        self.generator = nn.Sequential(nn.Linear(NOISE, 32), nn.ReLU(), nn.Linear(32, 2))
        self.discriminator = nn.Sequential(nn.Linear(2, 32), nn.LeakyReLU(0.2), nn.Linear(32, 32), nn.ReLU(),
                                           nn.Linear(32, 1))
        if dead_discriminator:
            with torch.no_grad():
                self.discriminator[2].bias.fill_(-50.0)  # every unit of the second layer silent for every input

    def training_step(self, batch, batch_index):
        opt_g, opt_d = self.optimizers()
        real = batch
        ones, zeros = torch.ones(len(real), 1), torch.zeros(len(real), 1)
        bce = nn.functional.binary_cross_entropy_with_logits
        fake = self.generator(torch.randn(len(real), NOISE))
        d_loss = bce(self.discriminator(real), ones) + bce(self.discriminator(fake.detach()), zeros)
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        g_loss = bce(self.discriminator(fake), ones)
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()

    def configure_optimizers(self):
        generator = self.parameters() if self.shared_optimizer else self.generator.parameters()
        return [torch.optim.Adam(generator, lr=1e-3), torch.optim.Adam(self.discriminator.parameters(), lr=1e-3)]


def _ring(count: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    batches = []
    for _ in range(count):
        angle = torch.randint(0, 8, (BATCH,), generator=g) * (torch.pi / 4)
        centres = torch.stack([angle.cos(), angle.sin()], 1) * 2
        batches.append(centres + 0.05 * torch.randn(BATCH, 2, generator=g))
    return batches


def _fit(module: L.LightningModule, callback: GradscopeCallback, tmp_path) -> L.Trainer:
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=L.loggers.CSVLogger(tmp_path, name="fit"),
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    loader = torch.utils.data.DataLoader(_ring(STEPS), batch_size=None, shuffle=False)
    trainer.fit(module, loader)
    return trainer


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("lightning-gan")
    torch.manual_seed(0)
    module = GAN(dead_discriminator=True)
    hooks_before = all_hooks(module)
    callback = GradscopeCallback(html=tmp_path / "report.html", path=tmp_path / "gan.gsrun")
    trainer = _fit(module, callback, tmp_path)
    return callback, trainer, module, hooks_before, tmp_path


def test_each_network_has_its_own_record_with_one_step_per_step_of_its_optimizer(fitted):
    callback, _, _, _, _ = fitted
    runs = {run.name: run for run in callback.runs}
    assert list(runs) == ["generator", "discriminator"]
    for run in runs.values():
        assert run.record.steps == list(range(STEPS))
    # each record holds its own network's layers, named inside it
    assert set(runs["generator"].record.param_stats) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert "4.weight" in runs["discriminator"].record.param_stats
    assert callback.record is runs["generator"].record and callback.diagnosis is runs["generator"].diagnosis
    note = "configure_optimizers returned one optimizer per network: this is the record of discriminator"
    assert any(n.startswith(note) for n in runs["discriminator"].record.meta.notes)


def test_the_dead_layer_is_found_in_the_discriminator_only(fitted):
    callback, _, _, _, _ = fitted
    runs = {run.name: run for run in callback.runs}
    dead = [f for f in runs["discriminator"].diagnosis if f.code == "dead-relu"]
    assert dead and "3" in dead[0].layers
    assert "dead-relu" not in runs["generator"].diagnosis.codes()


def test_one_report_one_page_and_a_run_file_per_network(fitted, capsys):
    callback, _, _, _, tmp_path = fitted
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert 'id="generator-verdict"' in html and 'id="discriminator-findings"' in html
    for name in ("generator", "discriminator"):
        stored = RunRecord.load(tmp_path / f"gan.{name}.gsrun")
        assert stored.steps == list(range(STEPS))
        assert stored.param_stats.keys() == {run.name: run for run in callback.runs}[name].record.param_stats.keys()
    assert not (tmp_path / "gan.gsrun").exists()


def test_the_summaries_are_logged_per_network_and_no_hook_is_left(fitted):
    _, trainer, module, hooks_before, _ = fitted
    with open(trainer.logger.log_dir + "/metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for name in ("generator", "discriminator"):
        logged = [int(r["step"]) for r in rows if r.get(f"gradscope/{name}/grad_norm_total")]
        assert logged == list(range(STEPS))
    assert not any(column.startswith("gradscope/grad_norm") for column in rows[0])
    assert all_hooks(module) == hooks_before
    assert all_hooks(module, trainer.optimizers[0]) == hooks_before
    assert all_hooks(module, trainer.optimizers[1]) == hooks_before


def test_optimizers_that_share_parameters_are_watched_as_one_with_a_warning(tmp_path):
    torch.manual_seed(0)
    callback = GradscopeCallback(log_summary=False)
    with pytest.warns(RuntimeWarning, match="optimizers #1 and #2 share parameters"):
        _fit(GAN(shared_optimizer=True), callback, tmp_path)
    assert [run.name for run in callback.runs] == ["model"]
    assert any("could not be split into one network each" in n for n in callback.record.meta.notes)


def test_the_text_report_shows_both_networks(tmp_path, capsys):
    torch.manual_seed(0)
    callback = GradscopeCallback(log_summary=False)
    _fit(GAN(), callback, tmp_path)
    printed = capsys.readouterr().out
    assert "2 networks, each trained by its own optimizer" in printed
    assert "\ngenerator\n=========\n" in printed and "\ndiscriminator\n=============\n" in printed


def test_fail_on_stops_the_fit_at_the_dead_discriminator_and_detaches_both_networks(tmp_path):
    from gradscope.integrations.session import FindingThresholdError

    torch.manual_seed(0)
    module = GAN(dead_discriminator=True)
    hooks_before = all_hooks(module)
    callback = GradscopeCallback(fail_on="error", log_summary=False)
    with pytest.raises(FindingThresholdError, match=r"fail_on='error'.*dead-relu"):
        _fit(module, callback, tmp_path)
    assert all_hooks(module) == hooks_before  # the generator's watch too, though its run had no error
    runs = {run.name: run for run in callback.runs}
    assert len(runs["discriminator"].record.steps) < STEPS


def test_a_second_fit_with_the_same_callback_starts_afresh(tmp_path):
    """A callback reused for another fit: a one-optimizer module after the GAN whose optimizers
    could not be split gets a record of its own, without the first fit's note."""
    torch.manual_seed(0)
    callback = GradscopeCallback(log_summary=False)
    with pytest.warns(RuntimeWarning, match="share parameters"):
        _fit(GAN(shared_optimizer=True), callback, tmp_path / "first")
    torch.manual_seed(0)
    _fit(GAN(), callback, tmp_path / "second")
    assert [run.name for run in callback.runs] == ["generator", "discriminator"]
    for run in callback.runs:
        assert not any("could not be split" in n for n in run.record.meta.notes)
