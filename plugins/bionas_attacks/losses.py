"""Per-image attack losses on logits: larger means closer to (or further into) misclassification."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from bionas.attacks import AttackError


def cross_entropy(labels: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda logits: F.cross_entropy(logits, labels, reduction="none")


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """z_y - max_{i != y} z_i: negative exactly when the image is misclassified."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return true - others.amax(dim=1)


def dlr(labels: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Difference of logits ratio (Croce & Hein 2020): -(z_y - max_{i!=y} z_i) / (z_pi1 - z_pi3).

    Invariant to shifting and rescaling the logits; needs at least 3 classes.
    """

    def loss(logits: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] < 3:
            raise AttackError("the dlr loss needs at least 3 classes; use loss: ce")
        top = logits.topk(3, dim=1).values
        return -margin(logits, labels) / (top[:, 0] - top[:, 2] + 1e-12)

    return loss


LOSSES = {"ce": cross_entropy, "dlr": dlr}
