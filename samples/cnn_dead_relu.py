"""A small CNN whose ReLUs are dead: the convolutions' biases start far below zero.

gradscope should find: dead-relu. It names the ReLU after `features.2` (and the later ones):
with a bias of -10 no pre-activation is ever positive, so those channels output 0 for every
sample, their gradient is exactly 0 and they never recover. The recommendation names the
layers and suggests LeakyReLU/GELU, Kaiming init, BatchNorm or a lower learning rate.

Run:  gradscope analyze samples/cnn_dead_relu.py --png figures/

No data is defined: gradscope synthesizes images of shape (batch, 3, 32, 32) from the first
Conv2d (use --input-shape 3x64x64 for another size) and random class targets.
"""

from torch import nn


def build_model() -> nn.Module:
    model = nn.Sequential()
    model.features = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),  # features.2: its bias is pushed far negative below
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    model.classifier = nn.Linear(16, 10)
    for conv in (model.features[2], model.features[5]):
        nn.init.constant_(conv.bias, -10.0)  # e.g. a bad init or one huge update: every unit dies
    return model
