"""A multilayer perceptron over the flattened image: layers fc1, fc2, ... then classifier."""

from __future__ import annotations

from collections import OrderedDict

from pydantic import Field, PositiveInt
from torch import nn

import bionas


class MLP(bionas.Model):
    name = "mlp"
    description = "Multilayer perceptron: flattened image, hidden linear layers with ReLU, linear classifier."

    class Options(bionas.PluginOptions):
        hidden: list[PositiveInt] = Field(default=[256, 256],
                                          description="Width of each hidden layer, input to output; [] = linear.")

    def build(self, info):
        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        width = info.channels * info.image_size * info.image_size
        for i, size in enumerate(self.options.hidden, start=1):
            layers[f"fc{i}"] = nn.Linear(width, size)
            layers[f"relu{i}"] = nn.ReLU()
            width = size
        layers["classifier"] = nn.Linear(width, info.num_classes)
        return nn.Sequential(layers)
