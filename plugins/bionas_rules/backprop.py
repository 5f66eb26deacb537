"""bp: backpropagation. Layers stay plain nn.Conv2d / nn.Linear: no wrapper, no overhead."""

from __future__ import annotations

from torch import nn

from bionas import LearningRule, PluginOptions
from bionas.rules import release


class Backprop(LearningRule):
    name = "bp"
    description = "Backpropagation: the true gradient (layers stay plain, with no overhead)."
    backprop = True  # the rule of the fixed layers in the default space
    stackable = True  # plain layers: the supernet stacks them with B = W

    class Options(PluginOptions):
        pass

    def wrap(self, layer: nn.Module) -> nn.Module:
        """Return the layer plain: a rule it had is removed with its buffers."""
        return release(layer)
