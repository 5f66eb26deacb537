"""The model plugin contract: a fixed network by name, built for a data set's images and classes.

A `Model` builds an `nn.Module` mapping normalized images (N, info.channels, H, W) to
logits (N, info.num_classes); bionas puts the normalization in front of it and applies
the spec's rules to its Conv2d/Linear layers. A *family* model (`family = True`, the
first-party `timm` and `torchvision`) names a registry of architectures: a spec writes
`timm/resnet18`, and the family gets the architecture name and the options as keyword
arguments for that registry's constructor.
"""

from __future__ import annotations

import difflib
from typing import Any, ClassVar

from pydantic import Field
from torch import nn

from bionas.data.base import DatasetInfo
from bionas.errors import PluginError
from bionas.plugin import Plugin, PluginOptions

FAMILY_SEPARATOR = "/"


class FamilyOptions(PluginOptions):
    """What a family model is made with: the architecture, and its constructor's keyword arguments."""

    architecture: str = Field(description="Architecture name in the family's registry (the part after the '/').")
    kwargs: dict[str, Any] = Field(default_factory=dict,
                                   description="Keyword arguments passed through to the family's constructor.")


class Model(Plugin):
    """Base of model plugins: `build(info)` returns a freshly initialised network for the data set."""

    kind: ClassVar[str] = "model"
    family: ClassVar[bool] = False  # True: names a registry of architectures (`timm/resnet18`)

    def build(self, info: DatasetInfo) -> nn.Module:
        """A new network: normalized images with info.channels channels -> info.num_classes logits."""
        raise NotImplementedError

    # -- families ------------------------------------------------------------------------------

    @classmethod
    def architectures(cls) -> list[str]:
        """A family's architecture names (what `timm/<name>` may name)."""
        return []

    @classmethod
    def for_architecture(cls, architecture: str, options: dict[str, Any]) -> Model:
        """The family's model `architecture`, built with `options` as its constructor's keyword arguments."""
        known = cls.architectures()
        if architecture not in known:
            close = difflib.get_close_matches(architecture, known, n=3, cutoff=0.6)
            hint = f" Did you mean: {', '.join(f'{cls.name}/{c}' for c in close)}?" if close else ""
            raise PluginError(f"unknown {cls.name} model '{architecture}'.{hint} "
                              f"({len(known)} {cls.name} models are known)")
        return cls(architecture=architecture, kwargs=dict(options))


def split_model_name(name: str) -> tuple[str, str | None]:
    """'timm/resnet18' -> ('timm', 'resnet18'); 'resnet20' -> ('resnet20', None)."""
    family, sep, architecture = name.partition(FAMILY_SEPARATOR)
    return (family, architecture) if sep else (name, None)
