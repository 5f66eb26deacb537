"""A model plugin: a two-convolution network, built for the data set's channels and classes."""

from pydantic import Field
from torch import nn

import bionas


class TinyCNN(bionas.Model):
    name = "tiny_cnn"
    description = "Two 3x3 convolutions with ReLU, global average pooling, a linear classifier (example plugin)."

    class Options(bionas.PluginOptions):
        width: int = Field(default=8, gt=0, description="Channels of both convolutions.")

    def build(self, info):
        width = self.options.width
        return nn.Sequential(
            nn.Conv2d(info.channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(width, info.num_classes),
        )
