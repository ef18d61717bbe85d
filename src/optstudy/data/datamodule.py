"""One LightningDataModule for every data set: whole splits in memory, normalised per batch."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch

from optstudy.data.batches import TensorBatches
from optstudy.data.cache import Source, cache_file, load_prepared, load_shared, prepare
from optstudy.data.splits import seeded_split
from optstudy.errors import DataError
from optstudy.image_size import ImageSize, image_hw


class TensorDataModule(pl.LightningDataModule):
    """Serve a source's decoded uint8 splits as train / validation / test batches.

    Validation is a seeded ``val_fraction`` of the official training split; the official test
    split gives the final number. Images stay uint8 until a batch reaches its device, where
    they are scaled to [0, 1] and normalised with ``mean`` / ``std``; training batches then go
    through ``augment`` (a batch → batch callable), if given. A source without a test split
    (an image folder) gives an empty one. Under DDP each process serves its own shard of each
    split, ``batch_size`` examples a batch per process. ``image_size`` is n (n×n) or [h, w];
    ``num_classes`` None takes the data's own class count (:attr:`num_classes`), a number is
    checked against it.
    """

    def __init__(
        self,
        source: Source,
        cache_dir: str | Path,
        batch_size: int,
        eval_batch_size: int,
        val_fraction: float,
        split_seed: int,
        shuffle_seed: int,
        channels: int,
        image_size: ImageSize,
        num_classes: int | None,
        mean: Sequence[float],
        std: Sequence[float],
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.cache_dir = Path(cache_dir)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_fraction, self.split_seed, self.shuffle_seed = (
            val_fraction,
            split_seed,
            shuffle_seed,
        )
        self.shape = (channels, *image_hw(image_size))
        self.declared_classes = num_classes
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.augment = augment
        self.classes: list[str] = []
        self._splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def prepare_data(self) -> None:
        """Decode the source into the cache once and check it against the config (Lightning
        calls this on one process)."""
        data = load_prepared(prepare(self.source, self.cache_dir), mmap=True)
        self._check(data.train_images, data.classes)
        self.classes = data.classes

    def setup(self, stage: str | None = None) -> None:
        """Load the cache, check it against the config and carve the validation split."""
        if self._splits:
            return
        path = cache_file(self.source, self.cache_dir)
        if not path.exists():
            path = prepare(self.source, self.cache_dir)
        data = load_shared(path)
        self._check(data.train_images, data.classes)
        train, val = seeded_split(len(data.train_labels), self.val_fraction, self.split_seed)
        if not (len(train) and len(val)):
            raise DataError(
                f"val_fraction {self.val_fraction} leaves no train or no validation data"
            )
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        self._splits = {
            "train": (data.train_images[train], data.train_labels[train]),
            "val": (data.train_images[val], data.train_labels[val]),
            "test": (data.test_images, data.test_labels),
        }
        self._splits = {k: (x.to(device), y.to(device)) for k, (x, y) in self._splits.items()}
        self.classes = data.classes

    @property
    def num_classes(self) -> int:
        """The number of classes of the data (after :meth:`prepare_data` or :meth:`setup`),
        which ``data.num_classes``, when set, has been checked against."""
        if not self.classes:
            raise RuntimeError("the class count is known after prepare_data() or setup()")
        return len(self.classes)

    def split_sizes(self) -> dict[str, int]:
        """Number of examples in each split (after :meth:`setup`)."""
        return {k: len(y) for k, (_, y) in self._splits.items()}

    def train_dataloader(self) -> TensorBatches:
        """Shuffled training batches, a fresh seeded order each epoch, resumable mid-epoch."""
        x, y = self._splits["train"]
        return TensorBatches(
            x,
            y,
            self.batch_size,
            shuffle=True,
            seed=self.shuffle_seed,
            epoch=self._epoch,
            completed=self._completed_batches,
            **self._shard(),
        )

    def statistics_batches(self, count: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The first ``count`` training batches of the first epoch's order (this process's
        shard; the same batches whenever asked), normalised, not augmented: for recomputing
        batch-norm statistics."""
        x, y = self._splits["train"]
        batches = TensorBatches(
            x, y, self.batch_size, shuffle=True, seed=self.shuffle_seed, **self._shard()
        )
        for images, labels in itertools.islice(batches, count):
            yield self._normalise(images), labels

    def val_dataloader(self) -> TensorBatches:
        """Validation batches in a fixed order."""
        return TensorBatches(*self._splits["val"], self.eval_batch_size, **self._shard())

    def test_dataloader(self) -> TensorBatches:
        """Official test split batches in a fixed order."""
        return TensorBatches(*self._splits["test"], self.eval_batch_size, **self._shard())

    def on_after_batch_transfer(
        self, batch: tuple[torch.Tensor, torch.Tensor], dataloader_idx: int
    ):
        """Scale uint8 images to [0, 1] and normalise them, on the batch's device; augment
        training batches."""
        images, labels = batch
        images = self._normalise(images)
        if self.augment is not None and self.trainer is not None and self.trainer.training:
            images = self.augment(images)
        return images, labels

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        return images.float().div_(255).sub_(mean).div_(std)

    def _shard(self) -> dict[str, int]:
        """This process's share of every split under DDP (see :class:`TensorBatches`)."""
        if self.trainer is None:
            return {}
        return {"rank": self.trainer.global_rank, "world_size": self.trainer.world_size}

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer else 0

    def _completed_batches(self) -> int:
        return (
            self.trainer.fit_loop.epoch_loop.batch_progress.current.completed if self.trainer else 0
        )

    def _check(self, images: torch.Tensor, classes: list[str]) -> None:
        shape = tuple(images.shape[1:])
        if shape != self.shape:
            raise DataError(
                f"{self.source.name}: images are {shape} (C, H, W) but the data config says "
                f"{self.shape}; fix data.channels / data.image_size"
            )
        if self.declared_classes is not None and len(classes) != self.declared_classes:
            raise DataError(
                f"{self.source.name}: {len(classes)} classes found but data.num_classes is "
                f"{self.declared_classes}; set data.num_classes={len(classes)}, or null to "
                "count them from the data"
            )
