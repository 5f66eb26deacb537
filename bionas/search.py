"""Search strategies: the SearchStrategy base, the data it searches on, and its result."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from bionas.plugin import Plugin


@dataclass
class SearchData:
    """The training split divided in two: one part trains the weights, the other scores the architecture.

    Each part is an iterable of (images in [0, 1], labels) batches with `len()`
    and `set_epoch(epoch)` (bionas.data loaders); the test split is never here.
    """

    train: Iterable
    valid: Iterable
    num_classes: int


@dataclass
class SearchResult:
    genotype: Any  # bionas.space.Genotype
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch
    seconds: float = 0.0  # wall time of the search (this process; resumed runs add up)


class SearchStrategy(Plugin):
    """Searches the supernet's architecture and returns a SearchResult.

    `search(supernet, data, device, checkpoint, log=..., quiet=..., amp=...)`:
    `checkpoint` is a bionas.checkpoint.Checkpointer (or None): call
    `checkpoint.load()` first and continue after the epoch it holds, and
    `checkpoint.save(state, epoch)` after every epoch. `log(record)` receives one
    JSON-ready dict per epoch (metrics.jsonl).
    """

    kind: ClassVar[str] = "search"

    def search(
        self,
        supernet: torch.nn.Module,
        data: SearchData,
        device: torch.device,
        checkpoint=None,
        *,
        log: Callable[[dict[str, Any]], None] | None = None,
        quiet: bool = False,
        amp: str = "auto",
    ) -> SearchResult:
        raise NotImplementedError
