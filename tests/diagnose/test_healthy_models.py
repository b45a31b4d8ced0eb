"""No false alarms: ordinary, well-built models get no warning or error."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradscope
from tests.diagnose.builders import batches, classification_data, stack, train
from tests.models import SmallResNet, image_batches


class TinyTransformer(nn.Module):
    """Projection -> one nn.TransformerEncoderLayer -> mean over tokens -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(16, 32)
        self.block = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, dropout=0.1, batch_first=True)
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.proj(x)).mean(1))


def shallow_relu() -> nn.Module:
    return stack([16, 64, 64, 4], nn.ReLU)


def relu_bn_kaiming() -> nn.Module:
    model = stack([16, 64, 64, 64, 64, 4], nn.ReLU, norm=True)
    for layer in model:
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return model


def tanh_xavier() -> nn.Module:
    model = stack([16, 32, 32, 4], nn.Tanh)
    for layer in model:
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight, gain=nn.init.calculate_gain("tanh"))
            nn.init.zeros_(layer.bias)
    return model


def _data(kind: str):
    if kind == "images":
        return image_batches(8, batch=16)
    if kind == "tokens":
        g = torch.Generator().manual_seed(3)
        x, y = torch.randn(64, 6, 16, generator=g), torch.randint(0, 4, (64,), generator=g)
        return batches(x, y, 16, 8)
    return batches(*classification_data(256), 32, 8)


HEALTHY = [
    ("shallow ReLU MLP", shallow_relu, "vectors"),
    ("ReLU+BatchNorm+Kaiming MLP", relu_bn_kaiming, "vectors"),
    ("small residual CNN", SmallResNet, "images"),
    ("small transformer block", TinyTransformer, "tokens"),
    ("tanh MLP with Xavier init", tanh_xavier, "vectors"),
]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("name,build,data", HEALTHY, ids=[h[0] for h in HEALTHY])
def test_healthy_model_has_no_warning_or_error(name, build, data, optimizer):
    torch.manual_seed(0)
    model = build()
    opt = (
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        if optimizer == "sgd"
        else torch.optim.Adam(model.parameters(), lr=1e-3)
    )
    record = train(model, _data(data), optimizer=opt)
    diagnosis = gradscope.diagnose(record)
    loud = [(f.code, f.title) for f in diagnosis.at_least("warning")]
    assert loud == [], f"{name}: false alarm(s) {loud}"
    # the checks did run: only the overfitting rule (no val_loss logged) was skipped
    assert [f.evidence["rule"] for f in diagnosis if f.code == "rule-skipped"] == ["overfitting"]
