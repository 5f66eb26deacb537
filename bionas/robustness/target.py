"""What `bionas attack` attacks: a trained network and the test data it is evaluated on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from bionas.errors import BionasError
from bionas.registry import get_dataset
from bionas.model_network import load_trained_network

MODEL_FILE = "model.safetensors"  # the retrained network in a run directory


@dataclass
class Target:
    """A trained model and the test data it is evaluated on."""

    model: nn.Module
    data: Any  # (images, labels) tensors, a torch Dataset split, or a DataLoader
    name: str


def load_target(path: str | Path) -> Target:
    """The model of a run directory (its model.safetensors) or of a saved network file, and its test split."""
    path = Path(path)
    model_path = path / MODEL_FILE if path.is_dir() else path
    if not model_path.is_file():
        raise BionasError(f"no trained network at {model_path} (a run directory holds it once its retrain finished)")
    model, meta = load_trained_network(model_path)
    dataset = get_dataset(meta["dataset"]["name"], **meta["dataset"]["options"])
    return Target(model, dataset.split("test"), meta.get("run", model_path.stem))
