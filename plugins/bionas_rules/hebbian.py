"""hebbian: SoftHebb (Journé, Rodriguez, Guo & Moraitis, ICLR 2023), as a pseudo-gradient.

For each output unit k (a channel at each position, for a conv) with weighted
input u_k = w_k . x (bias excluded), the soft winner-take-all activation is

    y_k = softmax(u / T)_k over the output units,   negated for every unit but the
                                                    winner (largest u; all tied units
                                                    when several share it): anti-Hebbian
    dW_k = sum over samples (and positions) of  y_k (x - u_k w_k)
         = sum y_k x  -  (sum y_k u_k) w_k

computed in the forward pass (training mode, autograd recording), optionally
divided by max|dW| as the reference implementation does, and returned as the
weight's gradient with the sign flipped (grad = -dW), so an ordinary SGD step
moves W along dW and optimizers, clipping and DDP treat it as a gradient. The
bias gets no gradient. For a conv the sum over patches is the layer's own weight
gradient with y as output gradient (one convolution_backward call), so every
stride, padding, dilation and group setting works.

What the layers below receive is the `error` option: 'block' (the published
setting: no feedback at all) sends nothing, 'pass' sends the true W^T g.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import torch
from pydantic import Field, PositiveFloat
from torch import nn

from bionas import LearningRule, PluginOptions
from bionas.rules import rule_forward, weight_gradient


def softhebb_update(
    x: torch.Tensor,
    u: torch.Tensor,
    weight: torch.Tensor,
    geometry,
    temperature: float,
    anti_hebbian: bool = True,
    normalize: bool = True,
) -> torch.Tensor:
    """The SoftHebb update dW for input x and weighted input u = W x (channels on dim 1, or last for Linear)."""
    channels = 1 if geometry is not None else u.dim() - 1
    y = torch.softmax(u if temperature == 1 else u / temperature, dim=channels)
    if anti_hebbian:  # the winner (largest u; amax is far faster than argmax on CPU) stays Hebbian
        y = torch.where(u == u.amax(dim=channels, keepdim=True), y, -y)
    yx = weight_gradient(x, y, weight, geometry)
    other = [d for d in range(u.dim()) if d != channels]
    yu = (y * u).sum(dim=other)
    update = yx - yu.view(-1, *([1] * (weight.dim() - 1))) * weight
    if normalize:
        update = update / (update.abs().amax() + 1e-30)
    return update


def _no_update(x, y, weight, geometry) -> None:
    return None  # evaluation mode: no Hebbian update, no weight gradient


class SoftHebb(LearningRule):
    name = "hebbian"
    description = "SoftHebb: soft winner-take-all Hebbian update computed in the forward pass, as a pseudo-gradient."

    class Options(PluginOptions):
        temperature: PositiveFloat = Field(
            1.0,
            description="T of softmax(u / T) over output channels (the paper's first layer: 1/T = t_invert = 1).",
        )
        anti_hebbian: bool = Field(
            True, description="Negate the activation of every unit but the winner (the paper's soft anti-Hebbian rule)."
        )
        normalize: bool = Field(
            True, description="Divide the update by its largest absolute entry (as the reference implementation does)."
        )
        error: Literal["block", "pass"] = Field(
            "block",
            description="What the layers below receive: 'block' nothing (SoftHebb learns without feedback), "
            "'pass' the true W^T g.",
        )

    def layer_forward(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        send = layer.weight if self.options.error == "pass" else None
        pseudo = partial(self._pseudo_grad, layer.bias) if layer.training else _no_update
        return rule_forward(layer, x, send=send, pseudo_grad=pseudo)

    def effective_feedback(self, layer: nn.Module) -> torch.Tensor | None:
        return layer.weight if self.options.error == "pass" else None  # 'pass' sends W^T g

    def _pseudo_grad(self, bias, x, y, weight, geometry) -> torch.Tensor:
        # Under autocast x and y are half precision while weight and bias are not: compute in
        # the weight's dtype, or y - bias promotes and the weight-gradient convolution gets mixed dtypes.
        x, y = x.to(weight.dtype), y.to(weight.dtype)
        u = y
        if bias is not None:
            u = y - (bias.view(-1, 1, 1) if geometry is not None else bias)
        o = self.options
        return -softhebb_update(x, u, weight, geometry, o.temperature, o.anti_hebbian, o.normalize)
