"""A wide MLP trained on 64 noisy samples with a separate validation set: it memorizes.

gradscope should find: overfitting. The training loss keeps falling while the validation loss
(logged because this file defines val_data()) turns upward; the recommendation is dropout
(with PyTorch's p, the probability of *dropping* a unit: TensorFlow's keep_prob = 1 - p),
weight decay, early stopping at the best validation step, or more data / augmentation.

Run:  gradscope analyze samples/overfitting_mlp.py --html overfitting.html

The data is a fixed random "teacher" task with label noise, built from its own seeded
generator, so every run sees exactly the same samples.
"""

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

FEATURES = 32
CLASSES = 4
TRAIN_SAMPLES = 64
VAL_SAMPLES = 256
LABEL_NOISE = 0.3


def _task(samples: int, seed: int) -> TensorDataset:
    teacher = torch.Generator().manual_seed(1234)  # the same rule for training and validation
    weights = torch.randn(FEATURES, CLASSES, generator=teacher)
    rng = torch.Generator().manual_seed(seed)
    inputs = torch.randn(samples, FEATURES, generator=rng)
    labels = (inputs @ weights).argmax(dim=1)
    noisy = torch.rand(samples, generator=rng) < LABEL_NOISE
    labels[noisy] = torch.randint(0, CLASSES, (int(noisy.sum()),), generator=rng)
    return TensorDataset(inputs, labels)


_TRAIN = _task(TRAIN_SAMPLES, seed=1)
_VAL = _task(VAL_SAMPLES, seed=2)


def build_model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(FEATURES, 512),
        nn.ReLU(),
        nn.Linear(512, 512),
        nn.ReLU(),
        nn.Linear(512, CLASSES),
    )


def train_data():
    return DataLoader(_TRAIN, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))


def val_data():
    return DataLoader(_VAL, batch_size=256)


def make_optimizer(parameters):
    return torch.optim.Adam(parameters, lr=1e-3)
