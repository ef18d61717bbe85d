"""Writers of real on-disk data formats, used by the tests to build small data sets."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from optstudy.data.cifar_batches import FOLDER, TEST_BATCH, TRAIN_BATCHES
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


def band_image(label: int, classes: int, height: int, width: int, seed: int) -> np.ndarray:
    """An H×W×3 uint8 image whose content determines ``label``: the label-th of ``classes``
    horizontal bands is white, the rest is dark colour noise (different in each channel)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    band = max(1, height // classes)
    image[label * band : (label + 1) * band] = 255
    return image


def labelled_rgb_images(
    n: int, size: int = 32, classes: int = 10, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` N×3×H×W uint8 :func:`band_image` images and their int labels."""
    labels = np.random.default_rng(seed).integers(0, classes, n)
    images = np.stack(
        [band_image(int(c), classes, size, size, seed * 100_003 + i) for i, c in enumerate(labels)]
    )
    return images.transpose(0, 3, 1, 2).copy(), labels


CIFAR_CLASSES = [
    *("airplane", "automobile", "bird", "cat", "deer"),
    *("dog", "frog", "horse", "ship", "truck"),
]


def cifar_batches(n_per_batch: int = 100) -> dict[str, dict[bytes, object]]:
    """The seven objects the CIFAR-10 python format pickles: five training batches, the test
    batch (rows of 3072 bytes: the R, G then B 32×32 planes; labels under ``labels``) and
    ``batches.meta``. Images are :func:`labelled_rgb_images`."""
    batches: dict[str, dict[bytes, object]] = {}
    for i, name in enumerate((*TRAIN_BATCHES, TEST_BATCH)):
        images, labels = labelled_rgb_images(n_per_batch, seed=10 + i)
        batches[name] = {
            b"batch_label": f"batch {i + 1} of 6".encode(),
            b"labels": [int(c) for c in labels],
            b"data": images.reshape(n_per_batch, 3 * 32 * 32),
            b"filenames": [f"image_{i}_{j}.png".encode() for j in range(n_per_batch)],
        }
    batches["batches.meta"] = {
        b"label_names": [c.encode() for c in CIFAR_CLASSES],
        b"num_cases_per_batch": n_per_batch,
        b"num_vis": 3 * 32 * 32,
    }
    return batches


def write_cifar(path: Path, batches: dict[str, object], tarball: bool = True) -> Path:
    """Pickle ``batches`` (protocol 2, as the original) under ``cifar-10-batches-py/``: into
    the gzip tarball ``path``, or with ``tarball=False`` into the folder ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payloads = {name: pickle.dumps(obj, protocol=2) for name, obj in batches.items()}
    if not tarball:
        (path / FOLDER).mkdir(parents=True, exist_ok=True)
        for name, payload in payloads.items():
            (path / FOLDER / name).write_bytes(payload)
        return path / FOLDER
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in payloads.items():
            info = tarfile.TarInfo(f"{FOLDER}/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


# (extension, Pillow mode, (width, height)) cycled through the files of each class.
IMAGE_VARIANTS = (
    (".jpg", "RGB", (40, 30)),
    (".png", "RGBA", (20, 28)),
    (".png", "L", (24, 24)),
    (".gif", "P", (16, 16)),
    (".jpeg", "CMYK", (30, 40)),
    (".PNG", "RGB", (16, 16)),
)


def save_image(path: Path, rgb: np.ndarray, mode: str) -> Path:
    """Save an H×W×3 uint8 array in Pillow ``mode`` (RGBA gets a varying alpha channel, P an
    adaptive palette), in the format of ``path``'s extension."""
    image = Image.fromarray(rgb)
    if mode == "RGBA":
        alpha = np.arange(rgb.shape[0] * rgb.shape[1], dtype=np.uint8).reshape(rgb.shape[:2])
        image = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    elif mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    else:
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def write_image_folder(root: Path, classes: Sequence[str], per_class: int, seed: int = 0) -> Path:
    """A class-per-sub-folder data set of :func:`band_image` files in mixed formats, modes and
    sizes (:data:`IMAGE_VARIANTS`), plus files that must be ignored (no image extension,
    hidden)."""
    for label, name in enumerate(classes):
        for i in range(per_class):
            ext, mode, (width, height) = IMAGE_VARIANTS[i % len(IMAGE_VARIANTS)]
            rgb = band_image(label, len(classes), height, width, seed * 100_003 + label * 1000 + i)
            save_image(root / name / f"{i:03d}{ext}", rgb, mode)
        (root / name / "notes.txt").write_text("not an image")
        (root / name / ".hidden.jpg").write_bytes(b"an editor's hidden scratch file")
    return root
