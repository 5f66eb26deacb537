"""The SearchStrategy plugin base, the data a strategy searches on, and its result.

Strategies that train the supernet epoch by epoch subclass bionas.search.epochs.EpochSearch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from bionas.data import make_loader, search_split
from bionas.plugin import Plugin
from bionas.runtime import Runtime


@dataclass
class SearchData:
    """The training split divided in two: one part trains the weights, the other scores the architecture.

    Strategies choose their batch sizes: `data.loader("weights", 64)` and
    `data.loader("arch", 64)` give bionas.data loaders of (images in [0, 1],
    labels) on the device, with `len()` and `set_epoch(epoch)`. The val and
    test splits are never here.
    """

    dataset: Any  # bionas.data.Dataset
    weights_indices: torch.Tensor  # positions in dataset.split("train") that train the weights
    arch_indices: torch.Tensor  # positions that score the architecture
    device: torch.device = torch.device("cpu")
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    workers: int | None = None  # DataLoader workers for data sets not held in memory (None: make_loader's default)

    @property
    def num_classes(self) -> int:
        return self.dataset.info.num_classes

    def loader(self, part: str, batch_size: int, *, train: bool = True, augment=None, shard: bool = True):
        """Batches of one part ("weights" or "arch"); `train` shuffles (and augments by default).

        In a distributed run each rank gets its own shard; `shard=False` gives every rank the same batches.
        """
        if part not in ("weights", "arch"):
            raise ValueError(f"unknown search data part {part!r}; expected 'weights' or 'arch'")
        indices = self.weights_indices if part == "weights" else self.arch_indices
        seed = self.seed * 2 + (part == "arch")  # the two parts shuffle independently
        rank, world_size = (self.rank, self.world_size) if shard else (0, 1)
        return make_loader(self.dataset, "train", batch_size, train=train, device=self.device, augment=augment,
                           seed=seed, indices=indices, rank=rank, world_size=world_size, num_workers=self.workers)

    @classmethod
    def split(cls, dataset, arch_fraction: float = 0.5, **kwargs) -> SearchData:
        """Divide the dataset's training split (stratified, fixed seed) into the two parts."""
        weights, arch = search_split(dataset, fraction=1 - arch_fraction, seed=kwargs.get("seed", 0))
        return cls(dataset, weights, arch, **kwargs)


@dataclass
class SearchResult:
    genotype: Any  # bionas.space.Genotype
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch
    seconds: float = 0.0  # wall time of the search (this process; resumed runs add up)


class SearchStrategy(Plugin):
    """Searches the supernet's architecture and returns a SearchResult.

    `search(supernet, data, runtime, checkpoint=None)`: `runtime` (a bionas.Runtime)
    says where and how (device, amp, rank and world size, quiet) and takes one
    JSON-ready record per epoch (`runtime.record(record)`: metrics.jsonl).
    `checkpoint` is a bionas.checkpoint.Checkpointer (or None): call
    `checkpoint.load()` first and continue after the epoch it holds, and
    `checkpoint.save(state, epoch)` after every epoch. Subclassing
    bionas.search.epochs.EpochSearch gives all of this, and gradient averaging
    under torchrun, for free.

    `space_defaults` fills the SpaceSpec fields a spec leaves null (see
    `resolve_space`), e.g. `{"partial_channels": 4}` for a strategy whose
    published setting is a partial-channel supernet.
    """

    kind: ClassVar[str] = "search"
    space_defaults: ClassVar[dict[str, Any]] = {}

    def search(self, supernet: torch.nn.Module, data: SearchData, runtime: Runtime, checkpoint=None) -> SearchResult:
        raise NotImplementedError


# SpaceSpec fields that may be left null for the strategy to choose, and their value when it doesn't.
SPACE_FALLBACKS: dict[str, Any] = {"partial_channels": 1}


def resolve_space(space_spec, strategy_cls: type[SearchStrategy] | None = None):
    """A copy of `space_spec` (a SpaceSpec) with its null fields filled: the strategy's
    `space_defaults` first, then SPACE_FALLBACKS (`partial_channels` 1). Fields the spec
    sets are kept. Build the supernet from the result."""
    defaults = {**SPACE_FALLBACKS, **(strategy_cls.space_defaults if strategy_cls is not None else {})}
    return space_spec.model_copy(update={k: v for k, v in defaults.items() if getattr(space_spec, k, None) is None})
