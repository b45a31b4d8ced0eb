"""A GAN in the style of the DCGAN example (fully connected, tiny): BatchNorm and ReLU in the
generator with a Tanh output, LeakyReLU in the discriminator, BCE on a Sigmoid output, Adam
with beta1=0.5, one optimizer and one gradscope watcher per network.

The loop is the example's: the discriminator steps on real and (detached) fake batches, then
the generator's loss backpropagates *through* the discriminator, whose gradients are cleared
by `netD.zero_grad()` at the next iteration without a discriminator step.

Twin: the generator's last layer initialised with weights 30x too large, so its output Tanh
sits at +-1 (a saturated output: the generator gets almost no gradient).
"""

from __future__ import annotations

import torch
from torch import nn

import gradscope

from .cases import Case
from .data import ring_of_gaussians

NOISE, DIMS = 8, 16


def generator() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(NOISE, 32, bias=False),
        nn.BatchNorm1d(32),
        nn.ReLU(True),
        nn.Linear(32, 32, bias=False),
        nn.BatchNorm1d(32),
        nn.ReLU(True),
        nn.Linear(32, DIMS),
        nn.Tanh(),
    )


def discriminator() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(DIMS, 32),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Linear(32, 32),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Linear(32, 1),
        nn.Sigmoid(),
    )


def _train(saturated_output: bool = False, every: int = 1) -> dict:
    torch.manual_seed(0)
    netG, netD = generator(), discriminator()
    if saturated_output:
        with torch.no_grad():
            netG[6].weight.mul_(30.0)
    criterion = nn.BCELoss()
    optimizerD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizerG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    g = torch.Generator().manual_seed(5)
    with gradscope.watch(netG, optimizer=optimizerG, every=every) as runG, gradscope.watch(
        netD, optimizer=optimizerD, every=every
    ) as runD:
        for real in ring_of_gaussians(30, batch=32, dims=DIMS):
            b = real.size(0)
            # (1) update D: maximize log(D(x)) + log(1 - D(G(z)))
            netD.zero_grad()
            errD_real = criterion(netD(real).view(-1), torch.ones(b))
            errD_real.backward()
            fake = netG(torch.randn(b, NOISE, generator=g))
            errD_fake = criterion(netD(fake.detach()).view(-1), torch.zeros(b))
            errD_fake.backward()
            optimizerD.step()
            # (2) update G: maximize log(D(G(z)))
            netG.zero_grad()
            errG = criterion(netD(fake).view(-1), torch.ones(b))
            errG.backward()
            optimizerG.step()
            runD.log(loss=(errD_real + errD_fake).item())
            runG.log(loss=errG.item())
    return {"generator": runG.record, "discriminator": runD.record}


CASES = [
    Case("gan", "DCGAN example loop, one watcher per network", lambda: _train()),
    Case(
        "gan/saturated-output",
        "generator output layer weights x30: output Tanh at +-1",
        lambda: _train(saturated_output=True),
        ("saturation",),
        network="generator",
    ),
]
