"""A feedback rule: the sign of the forward weight, scaled by its mean magnitude.

Like usf it is sign-concordant, but its scale follows the layer's own weights
instead of a fan-in/fan-out constant, so it needs no buffers at all.
"""

import torch
from pydantic import Field

import bionas


class SignMean(bionas.FeedbackRule):
    name = "sign_mean"
    description = "Sign-concordant feedback B = mean(|W|) * sign(W) (example plugin)."

    class Options(bionas.PluginOptions):
        scale: float = Field(default=1.0, gt=0, description="Extra factor on the feedback magnitude.")

    def feedback(self, layer: torch.nn.Module) -> torch.Tensor:
        weight = layer.weight.detach()
        return self.options.scale * weight.abs().mean() * weight.sign()
