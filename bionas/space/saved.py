"""A derived network in a file: rebuilt from the genotype and construction config in its metadata.

The retrain stage saves `model.safetensors` (and `surrogate.safetensors`) with
`bionas.checkpoint.save_state(path, {"model": state_dict}, metadata)`, the
metadata holding at least `genotype` (its JSON) and `network` (the keyword
arguments of `Network` besides the genotype).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bionas.checkpoint import load_model_state, load_state, restoring
from bionas.errors import CheckpointError
from bionas.space.genotype import Genotype
from bionas.space.network import Network


def build_network(genotype: Genotype, config: dict[str, Any]) -> Network:
    """The network of `genotype` built with `config` (channels, cells, num_classes, ...), freshly initialised."""
    return Network(genotype, **config)


def load_network(path: str | Path, device: str | torch.device = "cpu") -> tuple[Network, dict[str, Any]]:
    """A network saved by a run (model.safetensors or surrogate.safetensors): (model in eval mode, metadata)."""
    state, meta = load_state(path)
    if "genotype" not in meta or "network" not in meta:
        raise CheckpointError(f"{path} is a bionas checkpoint but not a saved network (no genotype in its metadata)")
    with restoring(path, "network file"):  # a header a run could not have written: the file named, no traceback
        model = build_network(Genotype.from_dict(meta["genotype"]), meta["network"])
        load_model_state(model, state["model"], f"network in {path}")
    return model.to(device).eval(), meta
