"""A fused group's batches: each member's own training batch order, stacked; shared validation
and test batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytorch_lightning as pl
import torch

from optstudy.data import TensorDataModule
from optstudy.data.batches import TensorBatches


class MemberBatches:
    """Training batches of every member at once: ``(images, labels)`` shaped member × batch ×
    …, member ``m``'s batch being the one its standalone run draws (:class:`TensorBatches`
    seeded with its seed: the same order, the same mid-epoch resume)."""

    def __init__(self, orders: Sequence[TensorBatches], images: torch.Tensor, labels: torch.Tensor):
        self.orders = orders
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.orders[0])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for picks in zip(*self.orders, strict=True):
            index = torch.stack([idx for idx, _ in picks])
            yield self.images[index], self.labels[index]


class FusedDataModule(pl.LightningDataModule):
    """The group's data: one :class:`TensorDataModule` (the data every member trains on)
    served as :class:`MemberBatches` for training, with one training order per member
    ``seeds``, and as shared batches for validation and test. Batches are normalised on their
    device; training batches are augmented per member by the fused module (each member with
    its own random stream)."""

    def __init__(self, data: TensorDataModule, seeds: Sequence[int]) -> None:
        super().__init__()
        self.data = data
        self.seeds = list(seeds)

    def prepare_data(self) -> None:
        """Decode the data set into its cache (once)."""
        self.data.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        """Load the splits onto the group's device."""
        self.data.trainer = self.trainer
        self.data.setup(stage)

    def train_dataloader(self) -> MemberBatches:
        """Every member's training batches, stacked."""
        images, labels = self.data.split("train")
        # Each member's order yields positions in the training split (its "images").
        positions = torch.arange(len(labels), device=labels.device)
        orders = [self.data.train_batches(positions, labels, seed) for seed in self.seeds]
        return MemberBatches(orders, images, labels)

    def val_dataloader(self) -> TensorBatches:
        """Validation batches, the same for every member."""
        return self.data.val_dataloader()

    def test_dataloader(self) -> TensorBatches:
        """Test batches, the same for every member."""
        return self.data.test_dataloader()

    def on_after_batch_transfer(
        self, batch: tuple[torch.Tensor, torch.Tensor], dataloader_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalise the images on their device."""
        images, labels = batch
        return self.data.normalise(images), labels
