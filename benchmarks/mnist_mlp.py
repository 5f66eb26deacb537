"""The embedded MNIST digits and the MLP the benchmarks train (shared by the scripts here)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mnist() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The mnist5k dataset's fixed split as N x 1 x 28 x 28 images in [0, 1]: its train and val splits
    (4,000 digits) to train on, its test split (1,000) to test on."""
    import bionas

    data = bionas.get_dataset("mnist5k")
    parts = {name: data.tensors(name) for name in ("train", "val", "test")}
    train_x = torch.cat([parts["train"][0], parts["val"][0]]).float() / 255
    train_y = torch.cat([parts["train"][1], parts["val"][1]])
    return train_x, train_y, parts["test"][0].float() / 255, parts["test"][1]


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
