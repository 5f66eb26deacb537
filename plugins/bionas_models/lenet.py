"""LeNet-5 (LeCun et al. 1998) as BioTorch's MNIST benchmark trains it: ReLU and max pooling.

conv 5x5 to 6, pool, conv 5x5 to 16, pool, conv 5x5 to 120, linear 84, linear to
the classes. LeNet-5 takes 32x32 images: smaller ones are zero-padded to 32 by the
first convolution (MNIST's 28x28 by 2 pixels, as LeCun did; BioTorch resizes them
to 32x32 instead). Larger ones leave a map bigger than 1x1 after the third
convolution, averaged to 1x1.
"""

from __future__ import annotations

import torch
from torch import nn

import bionas

LENET_SIZE = 32


class LeNet5Network(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, image_size: int):
        super().__init__()
        padding = max(0, (LENET_SIZE - image_size + 1) // 2)
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=padding)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.conv3 = nn.Conv2d(16, 120, 5)
        self.fc1 = nn.Linear(120, 84)
        self.fc2 = nn.Linear(84, num_classes)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = nn.functional.adaptive_avg_pool2d(self.relu(self.conv3(x)), 1).flatten(1)
        return self.fc2(self.relu(self.fc1(x)))


class LeNet5(bionas.Model):
    name = "lenet5"
    description = "LeNet-5 with ReLU and max pooling, as BioTorch's MNIST benchmark (61.7K parameters on MNIST)."

    def build(self, info):
        return LeNet5Network(info.channels, info.num_classes, info.image_size)
