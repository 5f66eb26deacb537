"""Small models and data the attack tests share (imported by tests/test_attack*.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def shuffled(images: torch.Tensor, labels: torch.Tensor, seed: int = 0):
    """The embedded MNIST digits come sorted by class: a fixed shuffle."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    return images[order], labels[order]


def mlp(hidden: int = 64, seed: int = 0, image_size: int = 28, channels: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * image_size**2, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def train(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    steps: int = 300,
    lr: float = 1e-3,
    batch: int = 64,
    seed: int = 0,
) -> nn.Module:
    """Adam on cross-entropy, minibatches in a fixed order; returns the model in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        index = torch.randint(0, len(images), (batch,), generator=generator)
        loss = F.cross_entropy(model(images[index]), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model.eval()


class OnePixelModel(nn.Module):
    """Class 1 exactly when pixel (row, col) of channel 0 is brighter than 0.5; class 0 otherwise."""

    def __init__(self, row: int, col: int):
        super().__init__()
        self.row, self.col = row, col

    def forward(self, x):
        value = x[:, 0, self.row, self.col]
        return torch.stack([torch.zeros_like(value), 20 * (value - 0.5)], dim=1)
