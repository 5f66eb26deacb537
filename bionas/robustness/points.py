"""The test points an evaluation attacks: image tensors, a dataset split or an unshuffled DataLoader,
as re-iterable batches in a fixed order."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from bionas.errors import BionasError


class TestPoints:
    """The first `points` test points in a fixed order, re-iterable as (images, labels) batches."""

    def __init__(self, images, labels, points: int | None, batch_size: int):
        self.batch_size = batch_size
        if torch.is_tensor(images):
            if labels is None or len(labels) != len(images):
                raise BionasError("give one label per image")
            n = len(images) if points is None else min(points, len(images))
            self.tensors = (images[:n], torch.as_tensor(labels[:n]))
            self.source = None
        else:
            if labels is not None:
                raise BionasError("labels are given with image tensors only; a dataset carries its own")
            self.tensors = None
            self.source = images
            self.limit = points
            loader = images if isinstance(images, torch.utils.data.DataLoader) else None
            if loader is not None and isinstance(loader.sampler, torch.utils.data.RandomSampler):
                raise BionasError("the data loader shuffles: every attack must see the same points; use shuffle=False")

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.tensors is not None:
            images, labels = self.tensors
            for start in range(0, len(images), self.batch_size):
                yield images[start : start + self.batch_size], labels[start : start + self.batch_size]
            return
        source = self.source
        if not isinstance(source, torch.utils.data.DataLoader):
            if self.limit is not None:
                source = torch.utils.data.Subset(source, range(min(self.limit, len(source))))
            source = torch.utils.data.DataLoader(source, batch_size=self.batch_size, shuffle=False)
        seen = 0
        for images, labels in source:
            labels = torch.as_tensor(labels)
            if self.limit is not None:
                images, labels = images[: self.limit - seen], labels[: self.limit - seen]
            if len(images) == 0:
                return
            seen += len(images)
            yield images, labels
