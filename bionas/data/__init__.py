"""Datasets: the Dataset plugin base, DatasetInfo, fixed splits and the loaders.

    dataset = bionas.get_dataset("cifar10", root="~/data/cifar10")
    dataset.info                          DatasetInfo(num_classes, channels, image_size, mean, std)
    dataset.split("train" | "val" | "test")   torch Dataset of (float image in [0, 1], int label)
    weights, arch = search_split(dataset)     the train split halved for a search
    loader = make_loader(dataset, "train", 64, train=True, device="cuda", seed=0, indices=weights)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for images, labels in loader: ...

Modules: base (Dataset, InMemoryDataset, helpers for plugins), splits
(stratified fixed-seed splits), augment (AugmentSpec, whole-batch
augmentation), transforms (the per-image torchvision v2 form), loaders.
"""

from bionas.data.augment import NO_AUGMENT, AugmentSpec
from bionas.data.base import (
    DATA_ENV,
    SPLITS,
    Dataset,
    DatasetInfo,
    InMemoryDataset,
    TensorSplit,
    carve,
    check_split,
    data_root,
    mean_std,
    require_files,
)
from bionas.data.loaders import Loader, MemoryLoader, TorchLoader, make_loader
from bionas.data.splits import search_split, stratified_split

__all__ = [
    "AugmentSpec",
    "NO_AUGMENT",
    "DATA_ENV",
    "SPLITS",
    "Dataset",
    "DatasetInfo",
    "InMemoryDataset",
    "TensorSplit",
    "carve",
    "check_split",
    "data_root",
    "mean_std",
    "require_files",
    "Loader",
    "MemoryLoader",
    "TorchLoader",
    "make_loader",
    "search_split",
    "stratified_split",
]
