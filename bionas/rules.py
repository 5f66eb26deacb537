"""Learning rules: the LearningRule / FeedbackRule bases, layer wrapping, exact_gradients().

(Interface only until the rules issue lands.)
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from bionas.plugin import Plugin


class LearningRule(Plugin):
    """A rule decides the error a layer sends below and the update of its own parameters.

    `wrap(layer)` takes an nn.Conv2d or nn.Linear and returns a module with the
    identical forward function and parameters and the rule's backward.
    """

    kind: ClassVar[str] = "rule"

    def wrap(self, layer: nn.Module) -> nn.Module:
        raise NotImplementedError


class FeedbackRule(LearningRule):
    """The feedback-alignment family: the input gradient uses `feedback(layer)` in place of the weight."""

    def feedback(self, layer: nn.Module) -> torch.Tensor:
        raise NotImplementedError


def convert(model: nn.Module, rule) -> nn.Module:
    """Wrap every Conv2d/Linear of `model` in place; `rule` is a name, a LearningRule or {glob: rule}."""
    raise NotImplementedError("learning rules are not implemented yet")


def exact_gradients(model: nn.Module):
    """Context manager: every rule layer of `model` back-propagates the true gradient inside it."""
    raise NotImplementedError("learning rules are not implemented yet")


def alignment(model: nn.Module):
    """Per rule layer: angle (degrees) between effective feedback and weight, and their norm ratio."""
    raise NotImplementedError("learning rules are not implemented yet")
