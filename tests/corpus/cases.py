"""The registry: every corpus case, what it is, and which findings it must (not) raise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import torch
import torch.nn.functional as F

import gradscope
from gradscope.diagnose.finding import Diagnosis
from gradscope.record import RunRecord

# A case trains its model(s) and returns one record per watched network, keyed by the network's name.
Trainer = Callable[[], dict[str, RunRecord]]


def train_classifier(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    scheduler: Any = None,
) -> dict[str, RunRecord]:
    """The classic classification loop of the PyTorch examples, watched; one record, "model"."""
    with gradscope.watch(model, optimizer=optimizer) as run:
        for x, y in batches:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            run.log(loss=loss.item())
    return {"model": run.record}


@dataclass(frozen=True)
class Case:
    name: str  # "<original>" or "<original>/<defect>"
    style: str  # which public example the code is written after
    train: Trainer
    expected: tuple[str, ...] = ()  # broken twin: any one of these codes at warning or above (or `level`)
    network: Optional[str] = None  # the network expected to show it (GAN: "generator")
    level: str = "warning"  # the least severity the expected finding must have

    @property
    def healthy(self) -> bool:
        return not self.expected


def diagnose_all(records: dict[str, RunRecord]) -> dict[str, Diagnosis]:
    return {name: gradscope.diagnose(record) for name, record in records.items()}


def false_alarms(diagnoses: dict[str, Diagnosis]) -> list[str]:
    """Every warning or error on a healthy model, as `network: code (title)`."""
    return [f"{net}: {f.code} ({f.title})" for net, d in diagnoses.items() for f in d.at_least("warning")]


def detected(case: Case, diagnoses: dict[str, Diagnosis]) -> bool:
    networks = [case.network] if case.network else list(diagnoses)
    return any(f.code in case.expected for net in networks for f in diagnoses[net].at_least(case.level))


def all_cases() -> list[Case]:
    from . import gan, gpt, lstm_lm, mlp, mnist_cnn, resnet, vae

    cases: list[Case] = []
    for module in (mlp, mnist_cnn, vae, gan, lstm_lm, gpt, resnet):
        cases.extend(module.CASES)
    return cases
