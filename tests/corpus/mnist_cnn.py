"""A small CNN in the style of PyTorch's MNIST example: F.relu, F.max_pool2d and log_softmax in
forward, nll_loss, Adadelta with lr=1.0 and a StepLR schedule.

Twin: fc1's bias initialised to -10 (a "bias trick" gone wrong): every unit after the
functional ReLU is dead from the first step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cases import Case, train_classifier
from .data import class_images


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, 1)
        self.conv2 = nn.Conv2d(8, 16, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(16 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.dropout2(x)
        return F.log_softmax(self.fc2(x), dim=1)


def _train(model: Net) -> dict:
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.7)
    batches = class_images(30, batch=32, channels=1, size=12, classes=10)
    return train_classifier(model, optimizer, batches, loss_fn=F.nll_loss, scheduler=scheduler)


def healthy():
    torch.manual_seed(0)
    return _train(Net())


def dead_fc1():
    torch.manual_seed(0)
    model = Net()
    nn.init.constant_(model.fc1.bias, -10.0)
    return _train(model)


CASES = [
    Case("mnist-cnn", "PyTorch MNIST example: functional ReLU/pooling, Adadelta lr=1, StepLR", healthy),
    Case("mnist-cnn/dead-fc1", "fc1 bias -10 before F.relu", dead_fc1, ("dead-relu",)),
]
