"""A 10-layer sigmoid MLP at PyTorch's default initialization: the classic vanishing gradient.

gradscope should find: vanishing-gradients. The backprop signal dL/d(output) shrinks by
roughly x0.1-0.25 per layer towards the input (the chain rule multiplies sigma' <= 1/4 per
layer), so the first layers barely train.

Run:  gradscope analyze samples/deep_sigmoid_mlp.py --html report.html
Fix:  samples/relu_bn_kaiming_mlp.py is the same network with ReLU, BatchNorm and Kaiming init;
      compare the two with `gradscope compare`.

No data is defined: gradscope synthesizes random inputs of shape (batch, 64) from the first
Linear layer and random class targets from the 10 outputs.
"""

from torch import nn

DEPTH = 10
WIDTH = 64


def build_model() -> nn.Module:
    layers: list[nn.Module] = []
    features = 64
    for _ in range(DEPTH):
        layers += [nn.Linear(features, WIDTH), nn.Sigmoid()]
        features = WIDTH
    layers.append(nn.Linear(WIDTH, 10))
    return nn.Sequential(*layers)
