"""ImageNet16-120 (NAS-Bench-201): downsampled 16x16 ImageNet (Chrabaszcz et al. 2017), its first 120 classes."""

from __future__ import annotations

import numpy as np
import torch

from bionas.data import DatasetInfo, InMemoryDataset, carve, data_root, require_files
from bionas.data.base import augment_option, root_field, split_seed_field, val_size_field
from bionas.plugin import PluginOptions
from bionas_datasets._files import images_and_labels, load_pickle

TRAIN_FILES = tuple(f"train_data_batch_{i}" for i in range(1, 11))
TEST_FILE = "val_data"
CLASSES = 120
HOW = (
    "Get the 16x16 downsampled ImageNet (Chrabaszcz et al. 2017: Imagenet16_train.zip and Imagenet16_val.zip, "
    "https://image-net.org/download-images.php, login required) or the ImageNet16 folder linked from the "
    "NAS-Bench-201 instructions (https://github.com/D-X-Y/NAS-Bench-201), and put the 11 files directly in {root}"
)


class ImageNet16_120(InMemoryDataset):
    name = "imagenet16-120"
    fixed_image_size = 16  # no retrain cutout: NAS-Bench-201 trains ImageNet16-120 without it
    description = "ImageNet16-120 (NAS-Bench-201): 16x16 downsampled ImageNet, classes 1-120; test = its val_data"

    class Options(PluginOptions):
        root: str | None = root_field()
        val_size: int = val_size_field(6000)
        split_seed: int = split_seed_field()
        augment: augment_option(padding=2, flip=True)

    @property
    def info(self) -> DatasetInfo:
        return DatasetInfo(
            CLASSES,
            3,
            self.fixed_image_size,
            (122.68 / 255, 116.66 / 255, 104.01 / 255),
            (63.22 / 255, 61.26 / 255, 65.09 / 255),
        )

    def load(self):
        root = data_root(self.options.root, self.name)
        listing = "train_data_batch_1..10 and val_data"
        require_files(self.name, root, (*TRAIN_FILES, TEST_FILE), listing, HOW.format(root=root))
        train = self._read(root, TRAIN_FILES)
        test = self._read(root, (TEST_FILE,))
        splits = carve(*train, {"val": self.options.val_size}, "train", self.options.split_seed, self.name)
        return {**splits, "test": test}

    def _read(self, root, files):
        """Images of labels 1..120 (relabelled 0..119), read one file at a time to keep memory low."""
        images, labels = [], []
        for f in files:
            data, label = images_and_labels(load_pickle(root / f, self.name), "labels", 16, root / f, self.name)
            keep = (label >= 1) & (label <= CLASSES)
            images.append(data[keep])
            labels.append(label[keep] - 1)
        return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))
