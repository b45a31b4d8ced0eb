"""The deep MLP of deep_sigmoid_mlp.py, fixed: Linear -> BatchNorm1d -> ReLU with Kaiming init.

gradscope should find: nothing at warning or error level (a healthy run). ReLU's derivative is 1 where
it is active, BatchNorm re-centres and re-scales every layer's input, and Kaiming init keeps
the signal's variance constant along depth, so the gradient reaches the first layer intact.

Run:  gradscope analyze samples/relu_bn_kaiming_mlp.py
      gradscope analyze samples/deep_sigmoid_mlp.py --json before.json
      gradscope analyze samples/relu_bn_kaiming_mlp.py --json after.json
      gradscope compare before.json after.json      # vanishing-gradients: fixed
"""

from torch import nn

DEPTH = 10
WIDTH = 64


def build_model() -> nn.Module:
    layers: list[nn.Module] = []
    features = 64
    for _ in range(DEPTH):
        linear = nn.Linear(features, WIDTH)
        nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.BatchNorm1d(WIDTH), nn.ReLU()]
        features = WIDTH
    layers.append(nn.Linear(WIDTH, 10))
    return nn.Sequential(*layers)
