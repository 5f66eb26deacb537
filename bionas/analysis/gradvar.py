"""Gradient variance across minibatches: the statistic, and its measurement on a network.

For one layer with weights w (n of them) and the update directions g_1..g_K the
layer's learning rule produces on K minibatches at the same point of training
(no weight update between them):

    mean      m   = (1/K) sum_k g_k
    variance  v_i = 1/(K-1) sum_k (g_k,i - m_i)^2            (unbiased, per weight)
    noise     N   = mean_i v_i                                (mean per-weight variance)
    signal    S   = mean_i m_i^2                              (= |m|^2 / n)
    ratio     R   = N / S = sum_i v_i / |m|^2                 (normalised variance)

R is scale-free (a rule that scales its updates by c leaves it unchanged) and
is the squared coefficient of variation of the minibatch update: R = 1 means the
update's noise is as large as its mean. Network-wide, sums run over the weights
of all layers: R_net = sum_l sum_i v_li / sum_l |m_l|^2. docs/analysis.md holds the definition.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bionas.rules import wrappable_layers


@dataclass(frozen=True)
class GradientVariance:
    numel: int
    mean_variance: float  # N: mean over weights of the variance across minibatches
    mean_square: float  # S: mean over weights of the squared mean gradient
    ratio: float  # R = N / S

    def as_dict(self) -> dict[str, float]:
        return {"numel": self.numel, "mean_variance": self.mean_variance, "mean_square": self.mean_square,
                "ratio": self.ratio}


class GradientMoments:
    """Streaming (Welford) per-weight mean and variance over K gradients of one layer."""

    def __init__(self):
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def add(self, gradient: torch.Tensor) -> None:
        g = gradient.detach().double().flatten()
        self.count += 1
        if self.mean is None:
            self.mean, self.m2 = g.clone(), torch.zeros_like(g)
            return
        delta = g - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (g - self.mean)

    def variance(self) -> torch.Tensor:
        if self.count < 2:
            raise ValueError("the variance across minibatches needs at least 2 gradients")
        return self.m2 / (self.count - 1)

    def summary(self) -> GradientVariance:
        return summarise([self])


def summarise(moments: list[GradientMoments]) -> GradientVariance:
    """R over the pooled weights of several layers (one layer: that layer's R)."""
    variance = sum(m.variance().sum().item() for m in moments)
    square = sum(m.mean.square().sum().item() for m in moments)
    numel = sum(m.mean.numel() for m in moments)
    ratio = variance / square if square > 0 else float("inf")
    return GradientVariance(numel, variance / numel, square / numel, ratio)


def gradient_variance(gradients: list[torch.Tensor]) -> GradientVariance:
    """R of one layer from its K minibatch gradients (a list of same-shaped tensors)."""
    moments = GradientMoments()
    for g in gradients:
        moments.add(g)
    return moments.summary()


# -- measurement on a run ------------------------------------------------------------------------


def layer_moments(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, GradientMoments]:
    """Per Conv2d/Linear of `model`: the moments of the update its rule produces on each batch.

    The weights do not change between batches (no optimizer step), so every batch
    is measured at the same point of training. Training mode (batch statistics in
    BatchNorm), no drop path, the main loss only.
    """
    layers = dict(wrappable_layers(model))
    moments = {name: GradientMoments() for name in layers}
    model.train()
    if hasattr(model, "drop_path_prob"):
        model.drop_path_prob = 0.0
    for images, labels in batches:
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        for name, layer in layers.items():
            if layer.weight.grad is not None:
                moments[name].add(layer.weight.grad)
    return {name: m for name, m in moments.items() if m.count}
