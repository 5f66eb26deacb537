"""A deterministic, procedurally generated, learnable image classification set (no files)."""

from __future__ import annotations

from functools import cached_property

import torch
import torch.nn.functional as F
from pydantic import Field

from bionas.data import DatasetInfo, InMemoryDataset, mean_std
from bionas.data.augment import gather_crops
from bionas.data.base import augment_option
from bionas.seeds import stream_generator
from bionas.plugin import PluginOptions

_STREAMS = {"train": 1, "val": 2, "test": 3}
_CHUNK = 4096


class Synthetic(InMemoryDataset):
    """Each class is a smooth random pattern (all channels); an image shows its class's pattern
    through a randomly placed window (shifts up to image_size/8 pixels) with random contrast and
    brightness plus pixel noise. Every pattern has the same mean and spread, so a model has to look
    at the spatial structure; a small convnet learns it within a few hundred steps.
    """

    name = "synthetic"
    description = "procedurally generated class patterns with shifts and noise; deterministic, learnable, no files"

    class Options(PluginOptions):
        num_classes: int = Field(10, ge=2, description="number of classes")
        image_size: int = Field(32, ge=4, description="height and width of the images")
        channels: int = Field(3, ge=1, description="channels of the images")
        train_size: int = Field(5000, ge=1, description="images in the train split")
        val_size: int = Field(1000, ge=1, description="images in the val split")
        test_size: int = Field(1000, ge=1, description="images in the test split")
        noise: float = Field(0.1, ge=0, description="std of the Gaussian pixel noise, in [0, 1] pixel units")
        seed: int = Field(0, description="seed of the class patterns and of every split's images")
        augment: augment_option(padding=2)

    @cached_property
    def info(self) -> DatasetInfo:
        o = self.options
        mean, std = mean_std(self.tensors("train")[0])
        return DatasetInfo(o.num_classes, o.channels, o.image_size, mean, std)

    def load(self):
        o = self.options
        size, shift = o.image_size, max(1, o.image_size // 8)
        g = stream_generator(o.seed, 0)
        grid = max(2, size // 4)
        coarse = torch.randn(o.num_classes, o.channels, grid, grid, generator=g)
        patterns = F.interpolate(coarse, size=(size + 2 * shift,) * 2, mode="bicubic", align_corners=False)
        patterns = patterns - patterns.mean((1, 2, 3), keepdim=True)
        patterns = patterns / patterns.std((1, 2, 3), keepdim=True)
        sizes = {"train": o.train_size, "val": o.val_size, "test": o.test_size}
        return {split: self._draw(patterns, n, shift, stream_generator(o.seed, _STREAMS[split]))
                for split, n in sizes.items()}

    def _draw(self, patterns: torch.Tensor, n: int, shift: int, g: torch.Generator):
        size = self.options.image_size
        labels = torch.randperm(n, generator=g) % self.options.num_classes
        images = torch.empty(n, self.options.channels, size, size, dtype=torch.uint8)
        for start in range(0, n, _CHUNK):  # bounded memory for large sets
            lab = labels[start : start + _CHUNK]
            m = len(lab)
            top = torch.randint(2 * shift + 1, (m,), generator=g)
            left = torch.randint(2 * shift + 1, (m,), generator=g)
            x = gather_crops(patterns, lab, top, left, size, size)
            contrast = 0.1 + 0.1 * torch.rand(m, 1, 1, 1, generator=g)
            contrast = contrast * (torch.randint(2, (m, 1, 1, 1), generator=g) * 2 - 1)  # either polarity
            brightness = 0.5 + 0.1 * torch.randn(m, 1, 1, 1, generator=g)
            x = brightness + contrast * x + self.options.noise * torch.randn(x.shape, generator=g)
            images[start : start + m] = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        return images, labels
