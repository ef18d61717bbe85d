"""Writers of real on-disk data formats, used by the tests to build small data sets."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from optstudy.data.mnist import FILES

_TYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i4"): 0x0C}


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (gzip-compressed when the name ends in .gz)."""
    dtype = np.dtype(array.dtype).newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    header = bytes([0, 0, _TYPE_CODES[dtype], array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    payload = header + array.astype(dtype).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


def labelled_images(
    n: int, size: int = 28, classes: int = 10, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 grey images whose content determines their label: class c lights the c-th
    horizontal band of the image, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
    band = max(1, size // classes)
    for i, c in enumerate(labels):
        images[i, c * band : (c + 1) * band] = 255
    return images, labels


def write_mnist_folder(
    folder: Path, n_train: int = 600, n_test: int = 200, gz: bool = True
) -> Path:
    """A folder with the four MNIST-family IDX files holding :func:`labelled_images`."""
    tr_x, tr_y = labelled_images(n_train, seed=1)
    te_x, te_y = labelled_images(n_test, seed=2)
    arrays = {"train_images": tr_x, "train_labels": tr_y, "test_images": te_x, "test_labels": te_y}
    for key, stem in FILES.items():
        write_idx(folder / (stem + (".gz" if gz else "")), arrays[key])
    return folder
