"""ImageFolder trees: `imagenet` (ILSVRC2012 train/ and val/) and `folder` (any tree, splits stated in the options)."""

from __future__ import annotations

import hashlib
import os
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.utils.data
from pydantic import Field, field_validator

from bionas.data import SPLITS, AugmentSpec, Dataset, DatasetInfo, TensorSplit, check_split, data_root
from bionas.data.base import augment_option, root_field, split_seed_field, val_size_field
from bionas.data.splits import stratified_split
from bionas.errors import DataError
from bionas.plugin import PluginOptions

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAYOUT = "one sub-directory of images per class, torchvision ImageFolder layout"


class _FolderSplit(torch.utils.data.Dataset):
    """Images `indices` of an ImageFolder tree, decoded with `transform`; `labels` in split order."""

    def __init__(self, tree, indices: torch.Tensor, transform):
        self.tree = tree
        self.indices = indices.tolist()
        self.labels = torch.as_tensor(tree.targets, dtype=torch.int64)[indices]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.tree.samples[self.indices[i]]
        return self.transform(self.tree.loader(path)), label


def _tree(directory: Path, classes: list[str], dataset: str):
    """An ImageFolder of `directory` whose class indices follow `classes` (those of the train directory)."""
    from torchvision.datasets import ImageFolder

    extra = sorted(p.name for p in directory.iterdir() if p.is_dir() and p.name not in classes)
    if extra:
        raise DataError(f"{dataset}: {directory} has class directories not in the training set: {', '.join(extra[:5])}")

    class Tree(ImageFolder):
        def find_classes(self, _directory):
            return classes, {c: i for i, c in enumerate(classes)}

    try:
        return Tree(str(directory))
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"{dataset}: no images in {directory} ({exc})") from None


class _ImageFolderDataset(Dataset):
    """Shared by imagenet and folder: splits from directories, val carved from train unless given."""

    crop_ratio: ClassVar[float] = 1.0  # eval: resize to image_size / crop_ratio, centre crop image_size
    how: ClassVar[str] = ""

    # -- per dataset ----------------------------------------------------------
    def split_dirs(self) -> dict[str, str]:
        raise NotImplementedError

    def val_count(self, n_train: int) -> int:
        raise NotImplementedError

    channels: ClassVar[int] = 3
    in_memory: ClassVar[bool] = False

    # -- splits ---------------------------------------------------------------
    @cached_property
    def _dirs(self) -> dict[str, Path]:
        """{split: directory}, checked to exist."""
        root = data_root(self.options.root, self.name)
        dirs = {split: root / sub for split, sub in self.split_dirs().items()}
        missing = [f"{d.name}/" for d in dirs.values() if not d.is_dir()]
        if missing:
            listing = " and ".join(f"{d.name}/" for d in dirs.values())
            raise DataError(
                f"{self.name}: expected directories {listing} ({LAYOUT}) in {root}/ "
                f"(missing: {', '.join(missing)}). {self.how}"
            )
        return dirs

    @cached_property
    def classes(self) -> list[str]:
        """The class directory names of the train directory, sorted; class i is classes[i]."""
        classes = sorted(p.name for p in self._dirs["train"].iterdir() if p.is_dir())
        if not classes:
            raise DataError(f"{self.name}: {self._dirs['train']} has no class directories ({LAYOUT})")
        return classes

    @cached_property
    def _parts(self) -> dict[str, tuple[Any, torch.Tensor]]:
        dirs, classes = self._dirs, self.classes
        trees = {split: _tree(d, classes, self.name) for split, d in dirs.items()}
        parts = {split: (tree, torch.arange(len(tree))) for split, tree in trees.items()}
        if "val" not in trees:
            train = trees["train"]
            n_val = self.val_count(len(train))
            if n_val >= len(train):
                raise DataError(f"{self.name}: a val split of {n_val} leaves nothing of the {len(train)} train images")
            val, rest = stratified_split(torch.as_tensor(train.targets), [n_val], self.options.split_seed)
            parts["train"], parts["val"] = (train, rest), (train, val)
        return parts

    def _head(self, augment: AugmentSpec | None) -> list:
        from torchvision.transforms import v2

        size = self.options.image_size
        if augment is not None and augment.resized_crop:
            head = [v2.RandomResizedCrop(size, antialias=True)]
        else:
            head = [v2.Resize(round(size / self.crop_ratio), antialias=True), v2.CenterCrop(size)]
        if self.channels == 1:
            head.append(v2.Grayscale(1))
        return head

    def _folder_split(self, name: str, augment: AugmentSpec | None) -> _FolderSplit:
        from bionas.data.transforms import build_transform

        tree, indices = self._parts[check_split(name, self.name)]
        transform = build_transform(augment, self.options.image_size, self.info.mean, head=self._head(augment))
        return _FolderSplit(tree, indices, transform)

    def split(self, name: str) -> torch.utils.data.Dataset:
        held = self.tensors(name)
        return TensorSplit(*held) if held is not None else self._folder_split(name, None)

    def augmented_split(self, name: str, augment: AugmentSpec) -> torch.utils.data.Dataset:
        if self.in_memory:
            return super().augmented_split(name, augment)
        return self._folder_split(name, augment)

    def fingerprint(self) -> str:
        """sha256 of the listing of every split: each image file's path under root, size and class. Not of
        the pixels: reading every image of a tree as large as ImageNet at each start would take minutes;
        an image rewritten in place at the same size goes unnoticed."""
        digest = hashlib.sha256()
        root = data_root(self.options.root, self.name)
        for split in SPLITS:
            tree, indices = self._parts[split]
            for i in indices.tolist():
                path, target = tree.samples[i]
                digest.update(f"{split}:{Path(path).relative_to(root)}:{os.path.getsize(path)}:{target}\n".encode())
        return digest.hexdigest()

    def labels(self, name: str) -> torch.Tensor:
        tree, indices = self._parts[check_split(name, self.name)]
        return torch.as_tensor(tree.targets, dtype=torch.int64)[indices]

    def tensors(self, name: str):
        check_split(name, self.name)
        if not self.in_memory:
            return None
        if name not in self._decoded:
            from torchvision.transforms import v2

            tree, indices = self._parts[name]
            decode = v2.Compose([*self._head(None), v2.ToImage(), v2.ToPureTensor()])
            split = _FolderSplit(tree, indices, decode)
            if len(split):
                images = torch.stack([split[i][0] for i in range(len(split))])
            else:
                size = self.options.image_size
                images = torch.empty(0, self.channels, size, size, dtype=torch.uint8)
            self._decoded[name] = (images, split.labels)
        return self._decoded[name]

    @cached_property
    def _decoded(self) -> dict:
        return {}


class ImageNet(_ImageFolderDataset):
    name = "imagenet"
    description = "ILSVRC2012 ImageNet from an ImageFolder tree (train/, val/ = test); 1,000 classes, DataLoader path"
    crop_ratio = 0.875  # resize 256, centre crop 224
    how = (
        "Download ILSVRC2012 from https://image-net.org/download-images.php (login required); extract "
        "ILSVRC2012_img_train.tar into train/ (one folder per wnid, from the per-class tars) and "
        "ILSVRC2012_img_val.tar into val/, sorted into the same wnid folders (e.g. with the valprep.sh "
        "script of the PyTorch ImageNet example)"
    )

    class Options(PluginOptions):
        root: str | None = root_field()
        image_size: int = Field(224, ge=8, description="side of the (centre or random-resized) crop fed to the model")
        val_size: int = val_size_field(10000)
        split_seed: int = split_seed_field()
        augment: augment_option(resized_crop=True, flip=True)

    @cached_property
    def info(self) -> DatasetInfo:
        return DatasetInfo(len(self.classes), 3, self.options.image_size, IMAGENET_MEAN, IMAGENET_STD)

    def split_dirs(self) -> dict[str, str]:
        return {"train": "train", "test": "val"}

    def val_count(self, n_train: int) -> int:
        return self.options.val_size


class Folder(_ImageFolderDataset):
    name = "folder"
    description = "any ImageFolder tree (a directory per split, a sub-directory per class); splits named in the options"
    how = "Point dataset.options.root at the tree and dataset.options.splits at its split directories"

    class Options(PluginOptions):
        root: str | None = root_field()
        splits: dict[str, str] = Field(
            default_factory=lambda: {"train": "train", "test": "val"},
            description="split name (train, test, optionally val) -> directory under root; "
            "without val, val is carved from train",
        )
        image_size: int = Field(32, ge=4, description="images are resized (shorter side) and centre-cropped to this")
        channels: Literal[1, 3] = Field(3, description="3: RGB; 1: converted to greyscale")
        val_fraction: float = Field(
            0.1, ge=0, lt=1, description="fraction of train carved (stratified) as val when splits has no val"
        )
        split_seed: int = split_seed_field()
        mean: tuple[float, ...] | None = Field(None, description="per-channel mean in [0, 1]; default ImageNet's / 0.5")
        std: tuple[float, ...] | None = Field(None, description="per-channel std in [0, 1]; default ImageNet's / 0.25")
        in_memory: bool = Field(
            False, description="decode every image once into memory (small trees) and use the fast in-memory loader"
        )
        augment: augment_option(flip=True)

        @field_validator("splits")
        @classmethod
        def _known_splits(cls, value: dict[str, str]) -> dict[str, str]:
            unknown = sorted(set(value) - {"train", "val", "test"})
            if unknown:
                raise ValueError(f"unknown split names {unknown}; use train, val, test")
            if not {"train", "test"} <= set(value):
                raise ValueError("splits needs at least train and test")
            outside = [d for d in value.values() if Path(d).is_absolute() or ".." in Path(d).parts]
            if outside:  # root is the one data location; run directories record these names too
                raise ValueError(f"split directories must lie under root (relative, no '..'): {outside}")
            return value

    @classmethod
    def spec_errors(cls, options, spec) -> list[str]:
        errors = super().spec_errors(options, spec)  # the augmentation's sizes
        if spec.retrain is not None and "val" not in options.splits and options.val_fraction == 0:
            errors.append("options.val_fraction: 0 with no val directory in splits leaves no validation split, and "
                          "the retrain selects its network on validation; give val_fraction > 0 or a val directory")
        return errors

    @property
    def channels(self) -> int:
        return self.options.channels

    @property
    def in_memory(self) -> bool:
        return self.options.in_memory

    @cached_property
    def info(self) -> DatasetInfo:
        o = self.options
        mean = o.mean or (IMAGENET_MEAN if o.channels == 3 else (0.5,))
        std = o.std or (IMAGENET_STD if o.channels == 3 else (0.25,))
        if len(mean) != o.channels or len(std) != o.channels:
            raise DataError(f"folder: mean and std need {o.channels} values each")
        return DatasetInfo(len(self.classes), o.channels, o.image_size, tuple(mean), tuple(std))

    def split_dirs(self) -> dict[str, str]:
        return dict(self.options.splits)

    def val_count(self, n_train: int) -> int:
        return int(round(self.options.val_fraction * n_train))
