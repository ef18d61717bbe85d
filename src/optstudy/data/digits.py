"""scikit-learn's bundled 8×8 handwritten digits, as a small offline data set."""

from __future__ import annotations

import numpy as np
import torch

from optstudy.data.splits import ImageSplits


class DigitsSource:
    """The 1,797 8×8 digits shipped with scikit-learn; a seeded share is the test split."""

    def __init__(self, name: str = "digits", test_fraction: float = 0.2, split_seed: int = 0):
        self.name = name
        self.test_fraction = test_fraction
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
        order = torch.randperm(
            len(labels), generator=torch.Generator().manual_seed(self.split_seed)
        )
        n_test = round(len(labels) * self.test_fraction)
        test, train = order[:n_test], order[n_test:]
        return ImageSplits(
            images[train], labels[train], images[test], labels[test], [str(d) for d in range(10)]
        )
