"""watch(..., budget=): a real Watcher times itself against the step, records fewer steps than
every=1 on a small model, and the record (in memory, JSON and the run store) says which and why.

The interval choice itself is tested from fed-in timings in test_clock.py; here only what can be
asserted whatever the machine's speed: a recorded step costs a small model about as much as the
step itself, far above a 2 % budget, so far fewer steps are recorded than every=1 would.
"""

from __future__ import annotations

import sqlite3

import pytest
import torch

import gradscope
from gradscope import RunRecord
from gradscope.errors import ConfigError
from gradscope.report.html import render_html
from gradscope.report.text import render_text

from ..models import all_hooks, classification_batches, mlp, train_steps

STEPS = 40


def _losses_and_record(batches, **options):
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hooks_before = all_hooks(model, opt)
    losses = []
    with gradscope.watch(model, optimizer=opt, **options) as run:
        for x, y in batches:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
            run.log(loss=loss.item())
        assert run.recorded_steps == len(run.record.steps)
    assert all_hooks(model, opt) == hooks_before
    return losses, run.record


@pytest.fixture(scope="module")
def runs():
    batches = classification_batches(STEPS)
    every_step = _losses_and_record(batches)
    budgeted = _losses_and_record(batches, budget=0.02)
    return every_step, budgeted


def test_budget_records_fewer_steps_than_every_1_from_step_0_and_says_which_and_why(runs):
    (_, every_step), (_, record) = runs
    assert every_step.steps == list(range(STEPS))
    assert record.steps[0] == 0 and 1 < len(record.steps) < STEPS // 2
    assert set(record.steps) < set(every_step.steps)
    # the interval in force at each recorded step, as many as steps; it starts at every=1's
    assert len(record.intervals) == len(record.steps) and record.intervals[0] == 1
    assert all(later > earlier for earlier, later in zip(record.steps, record.steps[1:]))
    assert record.meta.options["budget"] == 0.02
    chosen = record.meta.options["budget_interval"]
    assert chosen["first"] == 1 and chosen["last"] >= record.intervals[-1] > 1
    assert chosen["mean"] == pytest.approx(STEPS / len(record.steps), abs=0.01)
    notes = [n for n in record.meta.notes if n.startswith("Overhead budget 2 %")]
    assert len(notes) == 1  # refreshed, not piled up
    assert f"recorded {len(record.steps)} of {STEPS} steps" in notes[0] and "time.perf_counter" in notes[0]
    assert every_step.intervals == [] and "budget" not in every_step.meta.options


def test_budget_only_observes_and_its_recorded_steps_equal_every_1s(runs):
    (losses, every_step), (budget_losses, record) = runs
    assert budget_losses == losses  # bitwise the same training
    for stat, name in (("grad_norm", "0"), ("act_mean", "1"), ("backprop_norm", "2"), ("update_ratio", "4")):
        every_values = every_step.series(stat, name)
        assert record.series(stat, name) == [every_values[s] for s in record.steps], (stat, name)


def test_the_interval_survives_json_and_the_run_store_and_old_files_read_as_none(runs, tmp_path):
    _, (_, record) = runs
    assert RunRecord.load(record.save(tmp_path / "run.json")).intervals == record.intervals
    assert RunRecord.load(record.save(tmp_path / "run.gsrun")).intervals == record.intervals
    old = record.to_dict()
    del old["intervals"]  # a record written before budget= existed
    assert RunRecord.from_dict(old).intervals == []
    with sqlite3.connect(tmp_path / "run.gsrun") as connection:  # a store written before it
        connection.execute("DROP TABLE step_intervals")
    connection.close()
    older = RunRecord.load(tmp_path / "run.gsrun")
    assert older.intervals == [] and older.steps == record.steps


def test_a_streamed_budget_run_stores_its_intervals(tmp_path):
    batches = classification_batches(12)
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradscope.watch(model, optimizer=opt, budget=0.05, path=tmp_path / "run.gsrun") as run:
        train_steps(model, opt, batches, run)
    stored = RunRecord.load(tmp_path / "run.gsrun")
    assert stored.steps[0] == 0 and len(stored.intervals) == len(stored.steps) == run.recorded_steps
    assert sum(n.startswith("Overhead budget 5 %") for n in stored.meta.notes) == 1


def test_the_reports_say_the_steps_were_chosen_by_the_budget(runs):
    _, (_, record) = runs
    text = render_text(record, gradscope.diagnose(record))
    assert "chosen by an overhead budget" in text and "Overhead budget 2 %: recorded" in text
    page = render_html(record, None, figures=[])
    assert f"Overhead budget 2 %: recorded {len(record.steps)} of {STEPS} steps" in page


def test_every_is_the_shortest_interval_with_a_budget():
    _, record = _losses_and_record(classification_batches(24), every=3, budget=1)
    assert record.steps[0] == 0 and record.intervals[0] == 3  # a 100 % budget could allow every step
    assert all(later - earlier >= 3 for earlier, later in zip(record.steps, record.steps[1:]))
    assert min(record.intervals) == 3


@pytest.mark.parametrize("bad", [0, -0.5, 1.01, float("nan"), "2%", True])
def test_bad_budgets_are_refused_before_anything_is_hooked(bad):
    model = mlp()
    with pytest.raises(ConfigError, match=r"`budget` must be a number above 0 and at most 1.*got"):
        gradscope.watch(model, budget=bad)
    assert all_hooks(model) == 0


def test_without_an_optimizer_each_backward_is_a_step_the_budget_counts():
    torch.manual_seed(0)
    model = mlp()
    with gradscope.watch(model, budget=0.02) as run:
        for x, y in classification_batches(STEPS):
            torch.nn.functional.cross_entropy(model(x), y).backward()
            model.zero_grad()
    record = run.record
    assert run.step == STEPS and record.steps[0] == 0 and 1 < len(record.steps) < STEPS // 2
    assert len(record.intervals) == len(record.steps) == run.recorded_steps
    assert record.last("grad_norm", "0") is not None
