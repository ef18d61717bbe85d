"""The in-memory form every data source decodes to."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from optstudy.errors import ConfigError


@dataclass
class ImageSplits:
    """Decoded images (uint8, N×C×H×W) and int64 labels of a data set's official splits."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]

    def to_dict(self) -> dict[str, object]:
        """Return the splits as a plain dict that `torch.load(weights_only=True)` accepts."""
        return {
            "train_images": self.train_images,
            "train_labels": self.train_labels,
            "test_images": self.test_images,
            "test_labels": self.test_labels,
            "classes": list(self.classes),
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> ImageSplits:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)  # type: ignore[arg-type]


def seeded_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(n)`` into (rest, held_out) indices, ``held_out`` being ``round(n ·
    fraction)`` of them drawn by ``seed``; the same on every machine for a given torch."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_held = round(n * fraction)
    return order[n_held:], order[:n_held]


def check_test_fraction(fraction: float) -> float:
    """``data.test_fraction`` of a source without an official test split, if in [0, 1)."""
    if not 0 <= fraction < 1:
        raise ConfigError(f"data.test_fraction={fraction} is invalid: must be in [0, 1)")
    return fraction
