"""`gradscope analyze` on a model file that trains two networks (samples/gan.py): one record, one
set of findings and one report section per network, in the terminal, the JSON, the HTML and the PNGs."""

from __future__ import annotations

import json
import re

import pytest

from .conftest import SAMPLES, assert_user_error, files_under

GAN = SAMPLES / "gan.py"
NETWORKS = ["generator", "discriminator"]

# The sample with a planted defect in the discriminator: its first layer's units never fire.
DEAD_DISCRIMINATOR = GAN.read_text() + '''

_build_model = build_model


def build_model():
    model = _build_model()
    model.discriminator[1] = nn.ReLU()
    with torch.no_grad():
        model.discriminator[0].bias.fill_(-10.0)
    return model
'''


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    """The sample analyzed once for the tests below: 60 steps, every output."""
    from click.testing import CliRunner

    from gradscope_cli.main import main

    folder = tmp_path_factory.mktemp("gan")
    args = ["analyze", str(GAN), "--steps", "60", "--json", str(folder / "gan.json"), "--html",
            str(folder / "gan.html"), "--png", str(folder / "png")]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return folder, result


def test_each_network_has_its_own_record_of_one_step_per_iteration(gan_run):
    folder, result = gan_run
    assert result.exit_code == 0, result.stderr
    networks = json.loads((folder / "gan.json").read_text())["networks"]
    assert list(networks) == NETWORKS
    for name, data in networks.items():
        assert data["steps"] == list(range(60)), name  # the discriminator's discarded backward passes are not steps
        assert data["skipped_steps"] == [], name  # and not AMP skips: there is no GradScaler
        assert data["meta"]["options"]["network"] == name
        assert len(data["scalars"]["loss"]) == 60
        # the healthy GAN raises no false alarm
        assert [f["code"] for f in data["findings"] if f["severity"] in ("warning", "error")] == [], name
    assert networks["generator"]["modules"] != networks["discriminator"]["modules"]  # each its own layers


def test_the_terminal_html_and_pngs_show_each_network_under_its_heading(gan_run):
    folder, result = gan_run
    assert "generator\n=========\ngradscope report: Sequential" in result.stdout
    assert "discriminator\n=============\ngradscope report: Sequential" in result.stdout
    headings = re.findall(r"<h2>(.*?)</h2>", (folder / "gan.html").read_text())
    assert headings[0] == "generator" and "discriminator" in headings
    assert "generator: Findings" in headings and "discriminator: Per-layer statistics" in headings
    pngs = files_under(folder / "png")
    for name in NETWORKS:
        assert f"{name}.gradient_flow.png" in pngs and f"{name}.loss.png" in pngs
    assert all(p.split(".")[0] in NETWORKS for p in pngs)


def test_report_reads_the_several_networks_json_back(gan_run, gradscope_cli, tmp_path):
    folder, first = gan_run
    again = gradscope_cli("report", folder / "gan.json", "--json", tmp_path / "again.json")
    assert again.exit_code == 0
    assert again.stdout.split("\ngradscope ")[0] == first.stdout.split("\ngradscope ")[0]  # same headings
    assert list(json.loads((tmp_path / "again.json").read_text())["networks"]) == NETWORKS
    compared = gradscope_cli("compare", folder / "gan.json", folder / "gan.json")
    assert_user_error(compared, "holds the records of several networks (generator, discriminator)")


def test_a_dead_discriminator_is_found_in_the_discriminator(gradscope_cli, model_file, tmp_path):
    path = model_file(DEAD_DISCRIMINATOR, "gan_dead.py")
    run_json = tmp_path / "run.json"
    outcome = gradscope_cli("analyze", path, "--steps", "15", "--batch-size", "16", "--json", run_json)
    networks = json.loads(run_json.read_text())["networks"]
    dead = [f for f in networks["discriminator"]["findings"] if f["code"] == "dead-relu"]
    assert dead and "1" in dead[0]["layers"], networks["discriminator"]["findings"]
    assert "dead-relu" not in {f["code"] for f in networks["generator"]["findings"]}
    discriminator_part = outcome.stdout.split("\ndiscriminator\n=============\n")[1]
    assert "[dead-relu]" in discriminator_part and "[dead-relu]" not in outcome.stdout.split("\ndiscriminator\n")[0]


@pytest.mark.parametrize(
    "option, phrase",
    [
        (["--store", "run.gsrun"], "--store (a run store holds one run)"),
        (["--try-fixes"], "--try-fixes (a fix trial retrains the model"),
        (["--fixes-json", "fixes.json"], "--fixes-json (a fix trial"),
    ],
)
def test_options_that_need_one_record_are_refused_before_training(gradscope_cli, tmp_path, monkeypatch, option, phrase):
    monkeypatch.chdir(tmp_path)
    outcome = gradscope_cli("analyze", GAN, "--steps", "3", "--json", "run.json", *option)
    assert_user_error(outcome, "gan.py trains 2 networks (generator, discriminator)", phrase, "Run without it")
    assert files_under(tmp_path) == set()  # nothing written
