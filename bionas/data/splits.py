"""Fixed-seed stratified splits: carving val from train, train/val/test of embedded sets, search halves."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from bionas.seeds import stream_generator


def stratified_split(labels: torch.Tensor, sizes: Sequence[int], seed: int) -> list[torch.Tensor]:
    """Partition range(len(labels)) into parts of `sizes` plus a last part with the rest.

    Every part keeps the class proportions (within one image per class): the
    images of each class are shuffled, given keys (rank + u) / class count,
    and the parts are taken in key order. The result depends only on the
    labels, the sizes and `seed`. Each part's indices are sorted.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
    n = labels.numel()
    if sum(sizes) > n:
        raise ValueError(f"cannot take parts of sizes {list(sizes)} from {n} items")
    g = stream_generator(seed, 0x5B17)
    perm = torch.randperm(n, generator=g)
    lab = labels[perm] - (labels.min() if n else 0)
    counts = torch.bincount(lab)
    starts = torch.cumsum(counts, 0) - counts
    order = torch.argsort(lab, stable=True)
    rank = torch.empty(n, dtype=torch.int64)
    rank[order] = torch.arange(n) - starts[lab[order]]
    key = (rank.double() + torch.rand(n, generator=g, dtype=torch.float64)) / counts[lab].double()
    chosen = perm[torch.argsort(key, stable=True)]
    bounds = np.cumsum([0, *sizes, n - sum(sizes)])
    return [chosen[a:b].sort().values for a, b in zip(bounds[:-1], bounds[1:])]


def search_split(dataset: Any, fraction: float = 0.5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The "train" split of a bionas.data.Dataset divided in two for a search: (weights part, architecture part).

    Returns two disjoint, sorted int64 index tensors into `dataset.split("train")`
    (pass them as `make_loader(..., indices=...)`); `fraction` of the images go
    to the weights part, stratified by class, fixed by `seed`. Never touches
    val or test.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"search_split fraction must be in (0, 1), got {fraction}")
    labels = dataset.labels("train")
    n_weights = int(round(fraction * len(labels)))
    weights, arch = stratified_split(labels, [n_weights], seed)
    return weights, arch
