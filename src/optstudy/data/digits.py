"""scikit-learn's bundled 8×8 handwritten digits, as a small offline data set."""

from __future__ import annotations

import numpy as np
import torch

from optstudy.data.splits import ImageSplits, check_test_fraction, seeded_split


class DigitsSource:
    """The 1,797 8×8 digits shipped with scikit-learn. There is no official test split: a
    ``test_fraction`` share drawn by ``split_seed`` is the test split (as for an image folder)."""

    def __init__(self, name: str = "digits", test_fraction: float = 0.2, split_seed: int = 0):
        self.name = name
        self.test_fraction = check_test_fraction(test_fraction)
        self.split_seed = split_seed

    def fingerprint(self) -> str:
        """Identifies the bundled copy and the test split."""
        import sklearn

        return f"sklearn-{sklearn.__version__}-test{self.test_fraction}-seed{self.split_seed}"

    def load(self) -> ImageSplits:
        """Scale the 0..16 pixel values to uint8 0..255 and split off the test set."""
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = torch.from_numpy(np.rint(bunch.images * (255 / 16)).astype(np.uint8))[:, None]
        labels = torch.from_numpy(bunch.target.astype(np.int64))
        train, test = seeded_split(len(labels), self.test_fraction, self.split_seed)
        return ImageSplits(
            images[train], labels[train], images[test], labels[test], [str(d) for d in range(10)]
        )
