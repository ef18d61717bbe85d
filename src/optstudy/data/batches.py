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

    With ``world_size`` > 1 (DDP) every process draws the same order and iterates its own
    shard of it: process ``rank`` takes every ``world_size``-th example from position ``rank``
    on, so batch ``i`` of all processes together is batch ``i`` of one process with a
    ``world_size`` times larger ``batch_size``. Every process gets the same number of batches:
    a shuffled order is padded with its first examples to a multiple of ``world_size`` (as
    Lightning's DistributedSampler does); a fixed one (validation, test) is not, so each
    example counts once, and each shard is cut into as many batches as the shortest one needs
    (a batch may then hold one example more than ``batch_size``).
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
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size = batch_size
        self.shuffle, self.seed, self.epoch, self.completed = shuffle, seed, epoch, completed
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        n, w = len(self.labels), self.world_size
        shard = math.ceil(n / w) if self.shuffle else n // w
        return math.ceil(shard / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        b, skip, n, w = self.batch_size, self.completed(), len(self.labels), self.world_size
        if not self.shuffle and w == 1:
            for start in range(skip * b, n, b):
                yield self.images[start : start + b], self.labels[start : start + b]
            return
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch())
            order = torch.randperm(n, generator=g)
            order = torch.cat([order, order[: -n % w]])  # padded to a multiple of w
            batches = order[self.rank :: w].to(self.labels.device).split(b)
        else:
            shard = torch.arange(self.rank, n, w, device=self.labels.device)
            batches = shard.tensor_split(len(self)) if len(self) else ()
        for idx in batches[skip:]:
            yield self.images[idx], self.labels[idx]
