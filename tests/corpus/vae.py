"""A variational auto-encoder in the style of PyTorch's VAE example: the loss is *summed* over
the batch and the pixels (binary cross-entropy plus the KL term), trained with Adam.

A summed loss makes every gradient batch-size times larger than a mean loss would; Adam
divides that scale out again, so training is exactly as healthy as with a mean loss.
Twin: the learning rate multiplied by 1000.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import gradscope

from .cases import Case
from .data import pixel_images

PIXELS = 784  # 28x28, as MNIST


class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(PIXELS, 64)
        self.fc21 = nn.Linear(64, 8)
        self.fc22 = nn.Linear(64, 8)
        self.fc3 = nn.Linear(8, 64)
        self.fc4 = nn.Linear(64, PIXELS)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        return mu + torch.randn_like(std) * std

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, PIXELS))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def loss_function(recon_x, x, mu, logvar):
    bce = F.binary_cross_entropy(recon_x, x.view(-1, PIXELS), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def _train(lr: float) -> dict:
    torch.manual_seed(0)
    model = VAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    with gradscope.watch(model, optimizer=optimizer) as run:
        for (data,) in pixel_images(30, batch=64, pixels=PIXELS):
            optimizer.zero_grad()
            recon, mu, logvar = model(data)
            loss = loss_function(recon, data, mu, logvar)
            loss.backward()
            optimizer.step()
            run.log(loss=loss.item() / len(data))
    return {"model": run.record}


CASES = [
    Case("vae", "PyTorch VAE example: reduction='sum' loss, Adam lr=1e-3", lambda: _train(1e-3)),
    Case(
        "vae/lr-x1000",
        "Adam lr=1.0",
        lambda: _train(1.0),
        # Adam at lr=1 throws fc1's pre-activations below zero within steps: every ReLU unit dies, and
        # the dead-relu finding says to lower the learning rate
        ("update-ratio-high", "exploding-gradients", "nonfinite", "dead-relu"),
    ),
]
