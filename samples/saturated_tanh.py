"""A tanh MLP whose weights are scaled x6: most tanh outputs sit at +-1, where tanh' ~ 0.

gradscope should find: saturation. It names the tanh layers (a saturated tanh passes almost
no gradient back, so deeper variants also show vanishing-gradients). Recommended: normalize inputs,
Xavier init (no extra scaling), BatchNorm before the activation, or a ReLU-family activation.

Run:  gradscope analyze samples/saturated_tanh.py
"""

import torch
from torch import nn

WIDTH = 64
DEPTH = 5
WEIGHT_SCALE = 6.0


def build_model() -> nn.Module:
    layers: list[nn.Module] = []
    for _ in range(DEPTH):
        linear = nn.Linear(WIDTH, WIDTH)
        nn.init.xavier_normal_(linear.weight)
        with torch.no_grad():
            linear.weight.mul_(WEIGHT_SCALE)  # the mistake this sample shows
        layers += [linear, nn.Tanh()]
    layers.append(nn.Linear(WIDTH, 10))
    return nn.Sequential(*layers)


def make_batch(batch_size: int):
    inputs = torch.randn(batch_size, WIDTH)
    targets = torch.randint(0, 10, (batch_size,))
    return inputs, targets
