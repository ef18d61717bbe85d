"""Seeded random images of any shape: a data set for timing and for machines without data."""

from __future__ import annotations

import torch

from optstudy.data.splits import ImageSplits
from optstudy.errors import ConfigError
from optstudy.image_size import ImageSize, image_hw


class SyntheticSource:
    """``train_size`` / ``test_size`` uniform-noise uint8 images with uniform random labels.

    Nothing in them is learnable (accuracy stays at chance): they have the shape and size of
    a real data set, for benchmarks and for checking a machine before its data arrives.
    """

    def __init__(
        self,
        name: str,
        channels: int,
        image_size: ImageSize,
        num_classes: int | None,
        train_size: int,
        test_size: int,
        seed: int = 0,
    ) -> None:
        if num_classes is None:
            raise ConfigError("data.num_classes=null: synthetic data needs a class count (e.g. 10)")
        self.name = name
        self.shape = (channels, *image_hw(image_size))
        self.num_classes = num_classes
        self.sizes = (train_size, test_size)
        self.seed = seed

    def fingerprint(self) -> str:
        """Everything the generated tensors depend on."""
        shape = "x".join(map(str, self.shape))
        return f"synthetic-{shape}-c{self.num_classes}-n{self.sizes}-seed{self.seed}"

    def load(self) -> ImageSplits:
        """Draw the images and labels from ``seed``."""
        g = torch.Generator().manual_seed(self.seed)

        def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
            images = torch.randint(0, 256, (n, *self.shape), generator=g, dtype=torch.uint8)
            return images, torch.randint(0, self.num_classes, (n,), generator=g)

        (train_x, train_y), (test_x, test_y) = split(self.sizes[0]), split(self.sizes[1])
        classes = [str(c) for c in range(self.num_classes)]
        return ImageSplits(train_x, train_y, test_x, test_y, classes)
