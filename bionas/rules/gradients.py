"""Rules over a whole model, without naming any: exact_gradients() and alignment()."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from bionas.rules.layers import is_layer, rule_of


@contextlib.contextmanager
def exact_gradients(model: nn.Module) -> Iterator[nn.Module]:
    """Inside it, every rule layer and module of `model` back-propagates the true gradient.

    Graphs recorded inside the context (the forward pass decides) give the exact input and
    weight gradients, as if no layer had a rule. Nests, and restores on exceptions.
    """
    modules = [m for m in model.modules() if rule_of(m) is not None]
    for module in modules:
        module._bionas_exact += 1
    try:
        yield model
    finally:
        for module in modules:
            if "_bionas_exact" in module.__dict__:
                module._bionas_exact -= 1


@dataclass(frozen=True)
class LayerAlignment:
    """How the feedback a layer sends errors with compares with its weight."""

    rule: str
    angle_deg: float  # arccos(<B, W> / (|B| |W|)) in degrees; NaN when the rule has no weight-shaped B
    norm_ratio: float  # |B| / |W|; NaN likewise


def alignment(model: nn.Module) -> dict[str, LayerAlignment]:
    """Per Conv2d/Linear (by module name): the rule, the angle between its effective feedback and
    its weight, and their norm ratio.

    Plain layers (backprop) send with W itself: 0 degrees, ratio 1. Rules without a
    weight-shaped feedback (dfa, hebbian with error=block) report NaN; pc (its inference uses
    the true Jacobians) and hebbian with error=pass report W.
    """
    report = {}
    with torch.no_grad():
        for name, layer in model.named_modules():
            if not is_layer(layer):
                continue
            rule = rule_of(layer)
            feedback = layer.weight if rule is None else rule.effective_feedback(layer)
            report[name] = _compare("bp" if rule is None else rule.name, feedback, layer.weight)
    return report


def _compare(rule: str, feedback: torch.Tensor | None, weight: torch.Tensor) -> LayerAlignment:
    if feedback is None:
        return LayerAlignment(rule, math.nan, math.nan)
    b = feedback.detach().double().flatten()
    w = weight.detach().double().flatten()
    nb, nw = b.norm().item(), w.norm().item()
    if nb == 0 or nw == 0:
        return LayerAlignment(rule, math.nan, nb / nw if nw else math.nan)
    cos = max(-1.0, min(1.0, (b @ w).item() / (nb * nw)))
    return LayerAlignment(rule, math.degrees(math.acos(cos)), nb / nw)
