"""Datasets: the Dataset base and DatasetInfo.

(Interface only until the datasets issue lands.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.utils.data

from bionas.plugin import Plugin


@dataclass(frozen=True)
class DatasetInfo:
    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


class Dataset(Plugin):
    """A dataset: `info` and `split("train" | "val" | "test")` of (float image in [0, 1], int label)."""

    kind: ClassVar[str] = "dataset"

    @property
    def info(self) -> DatasetInfo:
        raise NotImplementedError

    def split(self, name: str) -> torch.utils.data.Dataset:
        raise NotImplementedError
