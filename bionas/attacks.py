"""Adversarial attacks: the Attack base.

(Interface only until the attacks issue lands.)
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from bionas.plugin import Plugin


class Attack(Plugin):
    """`attack(model, images, labels)` -> adversarial images in [0, 1] within the budget.

    The model maps [0, 1] images to logits (normalization lives inside it).
    """

    kind: ClassVar[str] = "attack"

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
