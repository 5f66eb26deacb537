"""The timm and torchvision registries as model families: `timm/<name>`, `torchvision/<name>`.

The options of a spec's `model` go to the library's constructor as keyword
arguments; the classes and (for timm) input channels come from the data set.
Nothing is downloaded, so options that ask for pretrained weights are refused.
Both libraries are imported only when a family is used: loading the plugins stays cheap.
"""

from __future__ import annotations

from functools import lru_cache
from typing import ClassVar

from torch import nn

import bionas
from bionas.model import FamilyOptions

NO_DOWNLOAD = "bionas downloads nothing, so pretrained weights cannot be loaded; train from scratch (leave it out)"
FROM_DATASET = "set from the data set; leave it out"


class _Family(bionas.Model):
    family = True
    Options = FamilyOptions
    refused: ClassVar[dict[str, str]] = {}  # constructor argument -> why a spec may not set it

    @classmethod
    def for_architecture(cls, architecture, options):
        problems = [f"{key}: {cls.refused[key]}" for key in options
                    if key in cls.refused and not (key in ("pretrained", "weights") and not options[key])]
        if problems:
            raise bionas.SpecError(problems, source=f"model '{cls.name}/{architecture}' options")
        return super().for_architecture(architecture, options)


@lru_cache(maxsize=1)
def _timm_models() -> tuple[str, ...]:
    import timm

    return tuple(timm.list_models())


class Timm(_Family):
    name = "timm"
    description = "Any model of timm's registry as timm/<name>; options are timm.create_model's keyword arguments."
    refused = {"pretrained": NO_DOWNLOAD, "pretrained_cfg": NO_DOWNLOAD, "pretrained_cfg_overlay": NO_DOWNLOAD,
               "checkpoint_path": NO_DOWNLOAD, "num_classes": FROM_DATASET, "in_chans": FROM_DATASET}

    @classmethod
    def architectures(cls):
        return list(_timm_models())

    def build(self, info):
        import timm

        kwargs = {**self.options.kwargs, "pretrained": False}  # a spec may say false; nothing else is accepted
        return timm.create_model(self.options.architecture, num_classes=info.num_classes, in_chans=info.channels,
                                 **kwargs)


@lru_cache(maxsize=1)
def _torchvision_models() -> tuple[str, ...]:
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))  # the classification models


def _gray_to_rgb(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: one-channel images repeated to three (torchvision's models take RGB)."""
    return (args[0].expand(-1, 3, -1, -1), *args[1:])


class Torchvision(_Family):
    name = "torchvision"
    description = ("Any classification model of torchvision as torchvision/<name>; options are the model "
                   "builder's keyword arguments.")
    refused = {"weights": NO_DOWNLOAD, "pretrained": NO_DOWNLOAD, "num_classes": FROM_DATASET}

    @classmethod
    def architectures(cls):
        return list(_torchvision_models())

    def build(self, info):
        import torchvision

        if info.channels not in (1, 3):
            raise bionas.BionasError(f"torchvision models take RGB images, and the data set has {info.channels} "
                                     f"channels: use timm/{self.options.architecture} (its in_chans follows the data)")
        kwargs = {key: value for key, value in self.options.kwargs.items() if key not in ("weights", "pretrained")}
        model = torchvision.models.get_model(self.options.architecture, weights=None, num_classes=info.num_classes,
                                             **kwargs)  # weights and pretrained may be given as null / false only
        if info.channels == 1:
            model.register_forward_pre_hook(_gray_to_rgb)
        return model
