"""Mini-batches by index slicing over tensors already in memory."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch


class TensorBatches:
    """Iterate ``(images, labels)`` mini-batches of in-memory tensors.

    With ``shuffle`` the order is a permutation drawn from ``seed`` and the current epoch
    (``epoch()``), so a run is reproducible. An epoch starts after the ``completed()`` batches
    training has already done in it: zero in a fresh epoch, more in one resumed from a
    mid-epoch checkpoint. Both are read when iteration starts (the first ``next``), after
    Lightning has restored its progress counters.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        epoch: Callable[[], int] = lambda: 0,
        completed: Callable[[], int] = lambda: 0,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size = batch_size
        self.shuffle, self.seed, self.epoch, self.completed = shuffle, seed, epoch, completed

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        b, epoch, skip = self.batch_size, self.epoch(), self.completed()
        if not self.shuffle:
            for start in range(skip * b, len(self.labels), b):
                yield self.images[start : start + b], self.labels[start : start + b]
            return
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.labels), generator=g).to(self.labels.device)
        for start in range(skip * b, len(order), b):
            idx = order[start : start + b]
            yield self.images[idx], self.labels[idx]
