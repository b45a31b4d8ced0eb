"""A small GAN learning a ring of eight 2-D Gaussians: two networks, two optimizers, one train_step.

`build_model()` returns one module holding the generator and the discriminator, `make_optimizer`
returns an Adam for each (beta1 = 0.5, as the DCGAN recipe), and `train_step` runs the usual
loop: the discriminator steps on a real and a (detached) fake batch, then the generator's loss
flows *through* the discriminator, whose gradients from it are thrown away by its `zero_grad`
at the next iteration without a discriminator step. train_step returns each network's loss.

gradscope finds which submodule each optimizer trains and watches each with its own optimizer:
one record, one set of findings and one report section per network (`generator`,
`discriminator`), one step per iteration each. The data is synthetic: nothing is downloaded.

gradscope should find: nothing at warning or error level.

    gradscope analyze samples/gan.py --steps 60 --html gan.html
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

NOISE = 8
MODES, RADIUS, SPREAD = 8, 2.0, 0.05


class GAN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.generator = nn.Sequential(
            nn.Linear(NOISE, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2),
        )
        self.discriminator = nn.Sequential(
            nn.Linear(2, 64), nn.LeakyReLU(0.2), nn.Linear(64, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1),
        )


def build_model() -> nn.Module:
    return GAN()


def make_batch(batch_size: int):
    """(real points from the ring, the generator's noise)."""
    angles = torch.randint(MODES, (batch_size,)) * (2 * math.pi / MODES)
    centres = RADIUS * torch.stack([angles.cos(), angles.sin()], dim=1)
    return centres + SPREAD * torch.randn(batch_size, 2), torch.randn(batch_size, NOISE)


def make_optimizer(model):
    return (
        torch.optim.Adam(model.generator.parameters(), lr=1e-3, betas=(0.5, 0.999)),
        torch.optim.Adam(model.discriminator.parameters(), lr=1e-3, betas=(0.5, 0.999)),
    )


def train_step(model, batch, optimizers):
    real, noise = batch
    optimizer_g, optimizer_d = optimizers
    generator, discriminator = model.generator, model.discriminator
    real_label = torch.ones(real.size(0), 1, device=real.device)
    fake_label = torch.zeros(real.size(0), 1, device=real.device)

    # (1) the discriminator: real points are real, generated ones fake
    discriminator.zero_grad(set_to_none=True)
    fake = generator(noise)
    loss_d = F.binary_cross_entropy_with_logits(discriminator(real), real_label) + F.binary_cross_entropy_with_logits(
        discriminator(fake.detach()), fake_label
    )
    loss_d.backward()
    optimizer_d.step()

    # (2) the generator: make the discriminator call its points real
    generator.zero_grad(set_to_none=True)
    loss_g = F.binary_cross_entropy_with_logits(discriminator(fake), real_label)
    loss_g.backward()  # also fills the discriminator's gradients, discarded at the next zero_grad
    optimizer_g.step()
    return {"generator": loss_g, "discriminator": loss_d}
