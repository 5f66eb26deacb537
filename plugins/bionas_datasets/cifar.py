"""CIFAR-10 and CIFAR-100, from the python pickles torchvision downloads (cifar-10-batches-py/, cifar-100-python/)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from bionas.data import DatasetInfo, InMemoryDataset, carve, data_root, require_files
from bionas.data.base import augment_option, download_field, root_field, split_seed_field, val_size_field
from bionas.errors import DataError
from bionas.plugin import PluginOptions
from bionas_datasets._files import images_and_labels, load_pickle


class _Cifar(InMemoryDataset):
    retrain_cutout = 16  # DARTS's CIFAR recipe
    fixed_image_size = 32
    folder: ClassVar[str]
    train_files: ClassVar[tuple[str, ...]]
    test_files: ClassVar[tuple[str, ...]]
    meta_file: ClassVar[str]
    listing: ClassVar[str]
    label_key: ClassVar[str]
    url: ClassVar[str]
    num_classes: ClassVar[int]
    mean: ClassVar[tuple[float, ...]]
    std: ClassVar[tuple[float, ...]]

    class Options(PluginOptions):
        root: str | None = root_field()
        download: bool = download_field()
        val_size: int = val_size_field(5000)
        split_seed: int = split_seed_field()
        augment: augment_option(padding=4, flip=True)

    @property
    def info(self) -> DatasetInfo:
        return DatasetInfo(self.num_classes, 3, self.fixed_image_size, self.mean, self.std)

    def _check(self, directory) -> None:
        how = (
            f"Download {self.url} and extract it into {directory.parent}, "
            "or set dataset.options.download: true"
        )
        require_files(self.name, directory, (*self.train_files, *self.test_files, self.meta_file), self.listing, how)

    def load(self):
        root = data_root(self.options.root, self.name)
        directory = root / self.folder
        if self.options.download:
            try:
                self._check(directory)
            except DataError:
                self._download(root)
        self._check(directory)
        train = self._read(directory, self.train_files)
        test = self._read(directory, self.test_files)
        splits = carve(*train, {"val": self.options.val_size}, "train", self.options.split_seed, self.name)
        return {**splits, "test": test}

    def _read(self, directory, files):
        parts = [images_and_labels(load_pickle(directory / f, self.name), self.label_key, 32, directory / f, self.name)
                 for f in files]
        images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
        labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
        return images, labels

    def _download(self, root) -> None:
        import torchvision

        cls = torchvision.datasets.CIFAR10 if self.num_classes == 10 else torchvision.datasets.CIFAR100
        cls(str(root), train=True, download=True)


class Cifar10(_Cifar):
    name = "cifar10"
    description = "CIFAR-10: 50,000 train (5,000 carved as val) and 10,000 test 32x32 colour images, 10 classes"
    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)
    meta_file = "batches.meta"
    listing = "data_batch_1..5, test_batch, batches.meta"
    label_key = "labels"
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    num_classes = 10
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)


class Cifar100(_Cifar):
    name = "cifar100"
    description = "CIFAR-100: 50,000 train (5,000 carved as val) and 10,000 test 32x32 colour images, 100 classes"
    folder = "cifar-100-python"
    train_files = ("train",)
    test_files = ("test",)
    meta_file = "meta"
    listing = "train, test, meta"
    label_key = "fine_labels"
    url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    num_classes = 100
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)
