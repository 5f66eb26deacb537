"""The CIFAR ResNets of He et al. 2016 (section 4.2): depth 6n + 2, three stages of n basic blocks.

A 3x3 convolution to 16 channels, then stages of 16, 32 and 64 channels (stride 2
at the start of the second and third), global average pooling and a linear
classifier. Where a block changes the shape, its shortcut is option A of the
paper (the input subsampled by 2 and zero-padded to the new channels: no
parameters, the CIFAR choice of the paper and of BioTorch's benchmark) or option
B (a strided 1x1 convolution and BatchNorm). Weights start from He (Kaiming)
normal initialization.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

import bionas

STAGE_CHANNELS = (1, 2, 4)  # multiples of the width, per stage


class PadShortcut(nn.Module):
    """Option A: subsample by `stride` and zero-pad the channels to `channels` (no parameters)."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.stride = stride
        extra = channels - in_channels
        self.padding = (0, 0, 0, 0, extra // 2, extra - extra // 2)  # channels padded on both sides

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, :: self.stride, :: self.stride], self.padding)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a shortcut; ReLU after the sum."""

    def __init__(self, in_channels: int, channels: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            if shortcut == "A":
                self.shortcut = PadShortcut(in_channels, channels, stride)
            else:
                self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                                              nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images: conv1, layer1..layer3 of n blocks each, fc."""

    def __init__(self, blocks: int, in_channels: int, num_classes: int, width: int = 16, shortcut: str = "A"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages, channels = [], width
        for i, multiple in enumerate(STAGE_CHANNELS):
            out = width * multiple
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(*(BasicBlock(channels if b == 0 else out, out, stride if b == 0 else 1,
                                                     shortcut) for b in range(blocks))))
            channels = out
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class ResNetOptions(bionas.PluginOptions):
    shortcut: Literal["A", "B"] = Field(
        default="A", description="Shortcut where a block changes shape: A = subsample and zero-pad (the paper's "
        "CIFAR choice, BioTorch's), B = strided 1x1 convolution and BatchNorm.")
    width: int = Field(default=16, gt=0, description="Channels of the first stage (the paper: 16); doubled twice.")


class _CifarResNet(bionas.Model):
    depth = 20
    Options = ResNetOptions

    def build(self, info):
        blocks = (self.depth - 2) // 6
        return CifarResNet(blocks, info.channels, info.num_classes, self.options.width, self.options.shortcut)


class ResNet20(_CifarResNet):
    name = "resnet20"
    description = "CIFAR ResNet-20 of He et al. 2016 (3 blocks per stage, 0.27M parameters)."
    depth = 20


class ResNet32(_CifarResNet):
    name = "resnet32"
    description = "CIFAR ResNet-32 of He et al. 2016 (5 blocks per stage, 0.46M parameters)."
    depth = 32


class ResNet56(_CifarResNet):
    name = "resnet56"
    description = "CIFAR ResNet-56 of He et al. 2016 (9 blocks per stage, 0.85M parameters)."
    depth = 56
