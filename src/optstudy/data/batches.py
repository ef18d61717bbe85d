"""Mini-batches by index slicing over tensors already in memory."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch


class TensorBatches:
    """Iterate ``(images, labels)`` mini-batches of in-memory tensors.

    With ``shuffle`` the order is a permutation drawn from ``seed`` and the current epoch
    (``epoch()``), so a run is reproducible and a resumed run sees the same order.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        epoch: Callable[[], int] = lambda: 0,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size = batch_size
        self.shuffle, self.seed, self.epoch = shuffle, seed, epoch

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        b = self.batch_size
        if not self.shuffle:
            for start in range(0, len(self.labels), b):
                yield self.images[start : start + b], self.labels[start : start + b]
            return
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch())
        order = torch.randperm(len(self.labels), generator=g).to(self.labels.device)
        for start in range(0, len(order), b):
            idx = order[start : start + b]
            yield self.images[idx], self.labels[idx]
