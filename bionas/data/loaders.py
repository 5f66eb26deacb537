"""`make_loader`: the one loader entry point, with an in-memory fast path and a DataLoader path.

Both yield `(images float32 [0, 1] N x C x H x W, labels int64)` on the device,
have `len()` = batches per epoch, and make epoch k's order and augmentation a
function of (seed, epoch, rank) only:

* shuffle order: a permutation drawn from (seed, epoch), the same on every
  rank; rank r of world_size takes every world_size-th position (training
  first drops the last len % world_size positions so every rank gets as many
  batches), so ranks see disjoint shards;
* augmentation: drawn from (seed, epoch, rank).

Each pass over a loader uses its current epoch and then advances it by one;
`set_epoch(k)` chooses the epoch of the next pass (resume, distributed use).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence

import torch
import torch.utils.data

from bionas.data.augment import NO_AUGMENT, AugmentSpec, augment_batch, draw_params
from bionas.data.base import Dataset, check_split
from bionas.seeds import stream_generator, stream_seed

Batch = tuple[torch.Tensor, torch.Tensor]

_SHUFFLE, _AUGMENT, _WORKERS = 1, 2, 3  # independent random streams


class Loader:
    """What `make_loader` returns; see the module docstring for the order/randomness contract."""

    in_memory: bool = False

    def __init__(
        self,
        dataset: Dataset,
        split: str,
        batch_size: int,
        *,
        train: bool,
        device: torch.device,
        augment: AugmentSpec,
        seed: int,
        indices: torch.Tensor | None,
        drop_last: bool,
        rank: int,
        world_size: int,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank {rank}, world_size {world_size}")
        self.dataset = dataset
        self.split = split
        self.batch_size = batch_size
        self.train = train
        self.device = device
        self.augment = augment
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.split_size = self._split_size()
        if indices is not None:
            indices = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
            if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= self.split_size):
                raise IndexError(f"indices out of range for the {self.split_size} images of split {split!r}")
        self.indices = indices

    def _split_size(self) -> int:
        raise NotImplementedError

    @property
    def num_samples(self) -> int:
        """Images this rank sees per epoch (before drop_last)."""
        n = self.split_size if self.indices is None else len(self.indices)
        if self.train:
            return n // self.world_size
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """The next pass is epoch `epoch` (then epoch + 1, ...)."""
        self.epoch = int(epoch)

    def positions(self, epoch: int) -> torch.Tensor:
        """This rank's positions into the split for `epoch`, in visiting order (int64, CPU)."""
        base = torch.arange(self.split_size) if self.indices is None else self.indices
        if self.train:
            base = base[torch.randperm(len(base), generator=stream_generator(self.seed, epoch, _SHUFFLE))]
            base = base[: len(base) - len(base) % self.world_size]
        return base[self.rank :: self.world_size]

    def _start_epoch(self) -> int:
        epoch = self.epoch
        self.epoch += 1
        return epoch

    def _take(self, positions: torch.Tensor) -> torch.Tensor:
        if self.drop_last:
            return positions[: len(self) * self.batch_size]
        return positions

    def __iter__(self) -> Iterator[Batch]:
        raise NotImplementedError

    def __repr__(self) -> str:
        kind = "in-memory" if self.in_memory else "DataLoader"
        return (
            f"<{kind} loader {self.dataset.name}/{self.split} batch {self.batch_size} x {len(self)}"
            f" train={self.train} device={self.device} rank {self.rank}/{self.world_size}>"
        )


class MemoryLoader(Loader):
    """Keeps the split's uint8 tensor on the device and augments whole batches there."""

    in_memory = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        pad = self.augment.padding if self.augment.active else 0
        self.images, self.labels = device_tensors(self.dataset, self.split, self.device, pad)
        self.fill = torch.tensor(self.dataset.info.mean, dtype=torch.float32, device=self.device)

    def _split_size(self) -> int:
        return len(self.dataset.tensors(self.split)[1])

    def __iter__(self) -> Iterator[Batch]:
        epoch = self._start_epoch()
        positions = self._take(self.positions(epoch))
        augment = self.augment.active
        if augment:
            height, width = (size - 2 * self.augment.padding for size in self.images.shape[2:])
            gen = stream_generator(self.seed, epoch, self.rank, _AUGMENT)
            params = draw_params(len(positions), self.augment, height, width, gen).to(self.device)
        positions = positions.to(self.device, non_blocking=True)
        for start in range(0, len(positions), self.batch_size):
            index = positions[start : start + self.batch_size]
            if augment:
                part = params[start : start + self.batch_size]
                images = augment_batch(self.images, index, self.augment, part, self.fill)
            else:
                images = self.images[index].float().div_(255)
            yield images, self.labels[index]


def device_tensors(dataset: Dataset, split: str, device: torch.device, pad: int = 0) -> Batch:
    """The split's (uint8 images zero-padded by `pad` pixels per side, labels) on `device`.

    Moved (and padded) once per dataset instance, split, device and padding.
    """
    cache = dataset.__dict__.setdefault("_bionas_device_tensors", {})
    key = (split, str(device), pad)
    if key not in cache:
        images, labels = dataset.tensors(split)
        images = images.to(device)
        if pad:
            images = torch.nn.functional.pad(images, (pad, pad, pad, pad))
        cache[key] = (images.contiguous(), labels.to(device))
    return cache[key]


class TorchLoader(Loader):
    """A torch DataLoader over the split with per-image v2 transforms; same batch interface."""

    def __init__(self, *args, num_workers: int, **kwargs):
        super().__init__(*args, **kwargs)  # builds the plain split (see _split_size)
        self.num_workers = num_workers
        if self.augment.active:
            self.source = self.dataset.augmented_split(self.split, self.augment)
            if len(self.source) != self.split_size:
                raise RuntimeError(f"{self.dataset.name}: augmented_split and split differ in length")

    def _split_size(self) -> int:
        # Loader.__init__ needs the size first: the split built for it is also the source without augmentation.
        self.source = self.dataset.split(self.split)
        return len(self.source)

    def __iter__(self) -> Iterator[Batch]:
        epoch = self._start_epoch()
        positions = self._take(self.positions(epoch)).tolist()
        cuda = self.device.type == "cuda"
        loader = torch.utils.data.DataLoader(
            self.source,
            batch_size=self.batch_size,
            sampler=positions,
            num_workers=self.num_workers,
            pin_memory=cuda,
            generator=stream_generator(self.seed, epoch, self.rank, _WORKERS),
        )
        batches = iter(loader)
        if self.num_workers == 0:
            # The transforms draw from the global torch RNG in this process: give them their
            # own state, seeded by (seed, epoch, rank), and leave the caller's untouched.
            state = torch.Generator().manual_seed(stream_seed(self.seed, epoch, self.rank, _AUGMENT)).get_state()
            batches = _with_rng_state(batches, state)
        for images, labels in batches:
            yield images.to(self.device, non_blocking=cuda), labels.to(self.device, non_blocking=cuda)


def _with_rng_state(batches: Iterator[Batch], state: torch.Tensor) -> Iterator[Batch]:
    while True:
        saved = torch.get_rng_state()
        torch.set_rng_state(state)
        try:
            batch = next(batches)
        except StopIteration:
            return
        finally:
            state = torch.get_rng_state()
            torch.set_rng_state(saved)
        yield batch


def make_loader(
    dataset: Dataset,
    split: str,
    batch_size: int,
    *,
    train: bool,
    device: str | torch.device = "cpu",
    augment: bool | AugmentSpec | dict | None = None,
    seed: int = 0,
    indices: Sequence[int] | torch.Tensor | None = None,
    drop_last: bool | None = None,
    num_workers: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    in_memory: bool | None = None,
) -> Loader:
    """Batches of (float32 images in [0, 1], int64 labels) of one split, on `device`.

    train: shuffle each epoch (and, by default, augment and drop the last
        partial batch). Eval loaders keep the split's order and don't augment.
    augment: None -> the dataset's `augmentation` when `train`, none otherwise;
        True / False -> the dataset's augmentation / none; an AugmentSpec; or
        a dict of fields overriding the dataset's augmentation.
    seed: with the epoch (and rank), fixes shuffle order and augmentation.
    indices: positions into the split to use (e.g. from `search_split`).
    drop_last: default `train`.
    num_workers: DataLoader path only; default min(8, CPU count).
    rank, world_size: this process's disjoint shard (default: the whole split).
    in_memory: None -> the fast in-memory loader whenever the dataset has
        `tensors(split)` and the augmentation allows it (not resized_crop);
        False forces the DataLoader path; True requires the fast path.
    """
    check_split(split, dataset.name)
    device = torch.device(device)
    if augment is None:
        augment = train
    if isinstance(augment, bool):
        augment = dataset.augmentation if augment else NO_AUGMENT
    if not isinstance(augment, AugmentSpec):  # a dict: fields not given keep the dataset's defaults
        augment = AugmentSpec.model_validate({**dataset.augmentation.model_dump(), **dict(augment)})
    has_tensors = dataset.tensors(split) is not None
    fast_ok = has_tensors and not augment.resized_crop
    if in_memory is None:
        in_memory = fast_ok
    elif in_memory and not fast_ok:
        why = "resized_crop is per-image only" if has_tensors else f"{dataset.name} is not held in memory"
        raise ValueError(f"{dataset.name}: the in-memory loader can't be used ({why})")
    common = dict(
        train=train,
        device=device,
        augment=augment,
        seed=seed,
        indices=indices,
        drop_last=train if drop_last is None else drop_last,
        rank=rank,
        world_size=world_size,
    )
    if in_memory:
        loader: Loader = MemoryLoader(dataset, split, batch_size, **common)
    else:
        if num_workers is None:
            num_workers = min(8, os.cpu_count() or 1)
        loader = TorchLoader(dataset, split, batch_size, num_workers=num_workers, **common)
    if len(loader) == 0 and loader.num_samples > 0:
        raise ValueError(
            f"{dataset.name}/{split}: batch_size {batch_size} is larger than the {loader.num_samples} images "
            "of this loader, so drop_last leaves no batch; lower batch_size or pass drop_last=False"
        )
    return loader
