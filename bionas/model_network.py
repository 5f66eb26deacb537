"""A fixed network by name (a model plugin) with the spec's rules by glob: built, described and loaded.

What a model run trains is a `ModelChoice` (the model's name and options, the rules
by glob). `build_model_network` builds it for a data set: the model plugin's network,
converted by `bionas.convert` (layers no glob matches stay plain: backprop), behind
the data set's normalization. The retrain saves it as it saves a genotype's network,
with the choice in the metadata instead of a genotype; `load_trained_network` loads
either kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bionas.checkpoint import load_metadata, load_model_state, load_state, restoring
from bionas.conversion import convert
from bionas.data import DatasetInfo
from bionas.errors import BionasError
from bionas.registry import get_model, get_rule
from bionas.rules import wrappable_layers
from bionas.rules.globs import first_match, glob_problems
from bionas.space.blocks import Normalize
from bionas.space.saved import load_network


class ModelNetwork(nn.Module):
    """Images in [0, 1] -> the data set's normalization -> the model (`net`) -> logits.

    It trains, tests and is attacked like a genotype's Network: `forward_with_aux` returns
    (logits, None) (a model has no auxiliary head) and `drop_path_prob`, which the retrain
    sets every epoch, changes nothing (drop path belongs to DARTS cells).
    """

    def __init__(self, net: nn.Module, in_channels: int, mean, std):
        super().__init__()
        self.normalize = Normalize(in_channels, mean, std)
        self.net = net
        self.drop_path_prob = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self(x), None


@dataclass(frozen=True)
class ModelChoice:
    """What a model run trains: `model` {name, options} and `rules` {glob: {name, options}} (None: backprop)."""

    model: dict[str, Any]
    rules: dict[str, dict[str, Any]] | None = None

    @classmethod
    def from_spec(cls, spec) -> ModelChoice:
        rules = None if spec.rules is None else {glob: ref.model_dump() for glob, ref in spec.rules.items()}
        return cls(spec.model.model_dump(), rules)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelChoice:
        return cls(data["model"], data.get("rules"))

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "rules": self.rules}

    def with_backprop(self) -> ModelChoice:
        """The same model with every layer plain (backprop): a transfer attack's default surrogate."""
        return ModelChoice(self.model)

    def layer_rules(self, net: nn.Module) -> dict[str, str | None]:
        """layer name (in the model) -> the name of the rule it learns by, None for plain backprop."""
        globs = list(self.rules or {})
        names = [self.rules[glob]["name"] for glob in globs]
        return {layer: None if (i := first_match(layer, globs)) is None else names[i]
                for layer, _ in wrappable_layers(net)}


def model_config(info: DatasetInfo) -> dict[str, Any]:
    """What building a model needs of its data set, stored beside its weights."""
    return {"num_classes": info.num_classes, "in_channels": info.channels, "image_size": info.image_size,
            "mean": list(info.mean), "std": list(info.std)}


def build_model_network(choice: ModelChoice, config: dict[str, Any]) -> ModelNetwork:
    """The chosen model, freshly initialised for the data set of `config`, its layers converted to the rules."""
    info = DatasetInfo(config["num_classes"], config["in_channels"], config["image_size"], tuple(config["mean"]),
                       tuple(config["std"]))
    net = get_model(choice.model["name"], **choice.model.get("options", {})).build(info)
    if choice.rules:
        problems = glob_problems([name for name, _ in wrappable_layers(net)], list(choice.rules))
        if problems:
            glob, why = next(iter(problems.items()))
            raise BionasError(f"rules['{glob}'] of model {choice.model['name']}: {why}")
        net = convert(net, {glob: get_rule(ref["name"], **ref.get("options", {}))
                            for glob, ref in choice.rules.items()})
    return ModelNetwork(net, info.channels, info.mean, info.std)


def load_trained_network(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """A network a run saved (model.safetensors, surrogate.safetensors): a model run's ModelNetwork or a
    genotype's Network, in eval mode, and the file's metadata."""
    if "model" not in load_metadata(path):
        return load_network(path, device)
    state, meta = load_state(path)
    if "network" not in meta:
        raise BionasError(f"{path} holds a model but not the data set it was built for (no 'network' metadata)")
    with restoring(path, "network file"):
        model = build_model_network(ModelChoice.from_dict(meta["model"]), meta["network"])
        load_model_state(model, state["model"], f"network in {path}")
    return model.to(device).eval(), meta
