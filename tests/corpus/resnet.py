"""A CIFAR-style ResNet in the style of the popular pytorch-cifar code: BasicBlocks with
BatchNorm and `F.relu` in forward, a 1x1 conv shortcut where the shape changes, SGD with
momentum 0.9 and weight decay 5e-4.

Twin: trained with a batch of 2 (BatchNorm's batch statistics are then mostly noise).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cases import Case, train_classifier
from .data import class_images


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class ResNet(nn.Module):
    def __init__(self, classes: int = 4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = BasicBlock(8, 8)
        self.layer2 = BasicBlock(8, 16, stride=2)
        self.linear = nn.Linear(16, classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer2(self.layer1(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def _train(batch: int) -> dict:
    torch.manual_seed(0)
    model = ResNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    return train_classifier(model, optimizer, class_images(25, batch=batch, channels=3, size=8, classes=4))


CASES = [
    Case("resnet", "pytorch-cifar ResNet: F.relu, BatchNorm, SGD momentum + weight decay", lambda: _train(16)),
    Case("resnet/batch-2", "BatchNorm trained at batch size 2", lambda: _train(2), ("batchnorm-small-batch",)),
]
