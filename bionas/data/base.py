"""The Dataset plugin base, its in-memory variant, and helpers for dataset plugins."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, ClassVar

import torch
import torch.utils.data
from pydantic import BeforeValidator, Field

from bionas.data.augment import AugmentSpec
from bionas.data.splits import stratified_split
from bionas.errors import DataError
from bionas.plugin import Plugin

SPLITS = ("train", "val", "test")
DATA_ENV = "BIONAS_DATA"

Tensors = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know of a dataset; mean and std are per channel, in [0, 1] pixel units."""

    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


class TensorSplit(torch.utils.data.Dataset):
    """A split held in memory: uint8 images N x C x H x W and int64 labels.

    Items are (float image C x H x W in [0, 1], int label), or `transform(uint8
    image)` when a transform (e.g. a v2 augmentation) is given.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable | None = None):
        if images.dtype != torch.uint8 or images.dim() != 4 or len(images) != len(labels):
            raise ValueError("TensorSplit needs uint8 images N x C x H x W and N labels")
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.images[i]
        image = self.transform(image) if self.transform is not None else image.float().div(255)
        return image, int(self.labels[i])


class Dataset(Plugin):
    """A dataset: `info` and `split("train" | "val" | "test")` of (float image in [0, 1], int label).

    * "train" excludes the validation images; "val" is carved from the original
      training set with a fixed seed (or is a separate set); "test" is the
      official test set, never used for selection.
    * Splits are un-augmented; augmentation is the loader's job
      (`bionas.data.make_loader`), driven by `augmentation` (per dataset defaults,
      overridable by the `augment` option).
    * Datasets that fit in memory also implement `tensors(split)`, which the
      fast loader keeps on the training device; disk-backed ones return None.
    """

    kind: ClassVar[str] = "dataset"
    default_augment: ClassVar[AugmentSpec] = AugmentSpec()
    # The retrain's cutout when the spec leaves retrain.cutout null: the data set's own recipe
    # (CIFAR: DARTS's 16), 0 (off) unless a data set is known to gain from it.
    retrain_cutout: ClassVar[int] = 0
    # The side of every image when no option sets it (else None: the `image_size` option, if any, says).
    fixed_image_size: ClassVar[int | None] = None

    @property
    def info(self) -> DatasetInfo:
        raise NotImplementedError

    def split(self, name: str) -> torch.utils.data.Dataset:
        raise NotImplementedError

    def tensors(self, name: str) -> Tensors | None:
        """(uint8 images N x C x H x W, int64 labels) of a split, on the CPU; None if not held in memory."""
        check_split(name, self.name)
        return None

    def labels(self, name: str) -> torch.Tensor:
        """The int64 labels of a split, in split order (used for stratified search splits)."""
        held = self.tensors(name)
        if held is not None:
            return held[1]
        split = self.split(name)
        for attr in ("labels", "targets"):
            if hasattr(split, attr):
                return torch.as_tensor(getattr(split, attr), dtype=torch.int64)
        return torch.tensor([int(split[i][1]) for i in range(len(split))], dtype=torch.int64)

    def fingerprint(self) -> str | None:
        """A hash of the data's content, for data sets read from a location (`location_fields`): a resumed
        run checks it instead of the location. None: the options alone fix the data (embedded, generated),
        or the data set cannot tell. Disk-backed data sets override this."""
        return None

    @classmethod
    def image_side(cls, options) -> int | None:
        """The side of the images these options give, known without reading any data; None: unknown until read."""
        return cls.fixed_image_size or getattr(options, "image_size", None)

    @classmethod
    def spec_errors(cls, options, spec) -> list[str]:
        """The retrain keeps its best validation epoch: a data set without a val split cannot serve it. An
        augmentation square or shift as large as the image can leave nothing of it."""
        errors = []
        if spec.retrain is not None and getattr(options, "val_size", None) == 0:
            errors.append("options.val_size: 0 leaves no validation split, and the retrain selects its network on "
                          "validation (its best epoch); give val_size > 0")
        augment, side = getattr(options, "augment", None), cls.image_side(options)
        if isinstance(augment, AugmentSpec) and side is not None:
            errors += [f"options.augment.{field}: {value} is not smaller than the {side}x{side} images: {why}; "
                       f"give less than {side} (0 = off)"
                       for field, value, why in (("cutout", augment.cutout, "the square can blank a whole image"),
                                                 ("padding", augment.padding, "a crop can hold only padding"))
                       if value >= side]
        return errors

    @classmethod
    def location_fields(cls) -> list[str]:
        """The options that name where the data set's files are (fields marked `data_location`, as
        `root_field()` is): a run directory's record of them is not followed without the user's say."""
        return [name for name, field in cls.Options.model_fields.items()
                if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("data_location")]

    @property
    def augmentation(self) -> AugmentSpec:
        """The training augmentation: the `augment` option if the dataset has one, else `default_augment`."""
        augment = getattr(self.options, "augment", None)
        return augment if augment is not None else self.default_augment

    def augmented_split(self, name: str, augment: AugmentSpec) -> torch.utils.data.Dataset:
        """The split with per-image augmentation (torchvision v2), as the DataLoader path reads it.

        Default: the v2 form of `augment` applied to the uint8 tensors (or, for a
        dataset without `tensors`, to the float images of `split`). Disk-backed
        datasets override this to augment while decoding.
        """
        from bionas.data.transforms import build_transform

        transform = build_transform(augment, self.info.image_size, self.info.mean)
        held = self.tensors(name)
        if held is not None:
            return TensorSplit(*held, transform=transform)
        return _Mapped(self.split(name), transform)


class _Mapped(torch.utils.data.Dataset):
    def __init__(self, base: torch.utils.data.Dataset, transform: Callable):
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        image, label = self.base[i]
        return self.transform(image), label


class InMemoryDataset(Dataset):
    """A dataset whose splits fit in memory: subclasses implement `load() -> {split: (uint8 images, labels)}`.

    `load` runs once per instance, on first use.
    """

    def load(self) -> dict[str, Tensors]:
        raise NotImplementedError

    @cached_property
    def _splits(self) -> dict[str, Tensors]:
        splits = self.load()
        missing = [s for s in SPLITS if s not in splits]
        if missing:
            raise RuntimeError(f"{type(self).__name__}.load() gave no {', '.join(missing)} split")
        return splits

    def tensors(self, name: str) -> Tensors:
        return self._splits[check_split(name, self.name)]

    def split(self, name: str) -> TensorSplit:
        return TensorSplit(*self.tensors(name))

    def labels(self, name: str) -> torch.Tensor:
        return self.tensors(name)[1]

    def fingerprint(self) -> str | None:
        """sha256 of every split's images and labels as loaded, when the data is read from a location."""
        if not self.location_fields():
            return None
        digest = hashlib.sha256()
        for split in SPLITS:
            for tensor in self.tensors(split):
                digest.update(f"{split}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
                digest.update(tensor.contiguous().numpy().tobytes())
        return digest.hexdigest()


def check_split(name: str, dataset: str = "dataset") -> str:
    if name not in SPLITS:
        raise ValueError(f"{dataset}: unknown split {name!r}; the splits are {', '.join(SPLITS)}")
    return name


def carve(images: torch.Tensor, labels: torch.Tensor, sizes: Mapping[str, int], rest: str, seed: int, dataset: str):
    """{name: (images, labels)} for stratified parts of `sizes`, the remaining images going to `rest`."""
    total = sum(sizes.values())
    if total >= len(labels):
        wanted = ", ".join(f"{k}_size {v}" for k, v in sizes.items())
        raise DataError(f"{dataset}: {wanted} leave nothing of the {len(labels)} images for {rest}")
    parts = stratified_split(labels, list(sizes.values()), seed)
    names = [*sizes, rest]
    return {name: (images[idx], labels[idx]) for name, idx in zip(names, parts)}


def mean_std(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std, in [0, 1] units, of uint8 images N x C x H x W."""
    x = images.transpose(0, 1).reshape(images.shape[1], -1).double() / 255
    return tuple(x.mean(1).tolist()), tuple(x.std(1).tolist())


# -- files -------------------------------------------------------------------------------------


def data_root(root: str | None, name: str) -> Path:
    """The absolute directory of a dataset: `root` if given, else $BIONAS_DATA/<name>, else ./data/<name>."""
    if root:
        return Path(root).expanduser().resolve()
    base = os.environ.get(DATA_ENV)
    return (Path(base).expanduser() if base else Path("data")).resolve() / name


def require_files(dataset: str, directory: Path, files: Iterable[str], listing: str, how: str) -> None:
    """Raise DataError unless every file exists in `directory`.

    Message: "<dataset>: expected files <listing> in <directory>/ (missing: ...). <how>."
    """
    files = list(files)
    missing = [f for f in files if not (directory / f).is_file()]
    if missing:
        if len(missing) == len(files):
            shown = "none of them is there" if directory.is_dir() else "the directory does not exist"
        else:
            shown = "missing: " + ", ".join(missing[:6]) + (", ..." if len(missing) > 6 else "")
        raise DataError(f"{dataset}: expected files {listing} in {directory}/ ({shown}). {how.rstrip('.')}.")


# -- option fields shared by dataset plugins ----------------------------------------------------


def root_field() -> Any:
    """A dataset's `root` option. `data_location` marks it as naming where files are read: a run directory's
    record of it is not followed without the user's say (bionas.robustness.target.recorded_dataset)."""
    return Field(
        None,
        json_schema_extra={"data_location": True},
        description=f"directory of the data files; default ${DATA_ENV}/<dataset name> when {DATA_ENV} "
        "is set, else data/<dataset name> under the working directory",
    )


def download_field() -> Any:
    return Field(False, description="download the files into root if they are missing")


def val_size_field(default: int) -> Any:
    return Field(default, ge=0, description="images carved from the training set (stratified) as the val split")


def split_seed_field() -> Any:
    return Field(0, description="seed of the fixed split into train / val (/ test) sets")


def augment_option(**defaults: Any) -> Any:
    """The type of an `augment` option with these defaults.

        augment: augment_option(padding=4, flip=True)

    A mapping overrides only the fields it gives ({cutout: 16} -> padding 4,
    flip, cutout 16); an AugmentSpec is taken as it is.
    """

    def merge(value: Any) -> Any:
        return {**defaults, **value} if isinstance(value, dict) else value

    return Annotated[
        AugmentSpec,
        BeforeValidator(merge),
        Field(
            default_factory=lambda: AugmentSpec(**defaults),
            description="training augmentation: padding, flip, cutout, resized_crop; "
            f"fields not given keep this dataset's defaults ({_spec_text(defaults)})",
        ),
    ]


def _spec_text(defaults: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in defaults.items()) or "none"
