"""Reader of the CIFAR-10 python format: pickled batches in a tarball or an extracted folder."""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from optstudy.data.safe_pickle import safe_loads
from optstudy.data.splits import ImageSplits
from optstudy.errors import DataError

FOLDER = "cifar-10-batches-py"  # the archive's root folder
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
MEMBERS = (*TRAIN_BATCHES, TEST_BATCH, META)
SIDE = 32  # images are 32×32 RGB, stored as 3072-byte rows: the R, G then B planes


def read_members(location: Path) -> dict[str, bytes]:
    """The raw bytes of every batch file, from the tarball or the extracted folder."""
    if location.is_dir():
        return {name: (location / name).read_bytes() for name in MEMBERS}
    wanted = {f"{FOLDER}/{name}": name for name in MEMBERS}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(location, "r:gz") as tar:
            for info in tar:
                if info.name in wanted and info.isfile():
                    found[wanted[info.name]] = tar.extractfile(info).read()  # type: ignore[union-attr]
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(
            f"cannot read {location}: truncated or not a gzip-compressed tar archive ({exc})"
        ) from exc
    missing = [f"{FOLDER}/{name}" for name in MEMBERS if name not in found]
    if missing:
        raise DataError(
            f"{location} is not the CIFAR-10 python archive: it lacks {', '.join(missing)}"
        )
    return found


def parse_members(members: dict[str, bytes], origin: Path) -> ImageSplits:
    """Decode the batches: the five training batches in order, the test batch, class names."""
    meta = _unpickle(members, META, origin)
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, bytes) for n in names):
        raise DataError(f"{origin}: {META} holds no list of label_names")
    classes = [n.decode("utf-8", errors="replace") for n in names]
    train = [_batch(members, name, len(classes), origin) for name in TRAIN_BATCHES]
    test_images, test_labels = _batch(members, TEST_BATCH, len(classes), origin)
    return ImageSplits(
        torch.cat([images for images, _ in train]),
        torch.cat([labels for _, labels in train]),
        test_images,
        test_labels,
        classes,
    )


def _unpickle(members: dict[str, bytes], name: str, origin: Path) -> object:
    try:
        return safe_loads(members[name])
    except Exception as exc:  # a damaged pickle can fail in many ways; all mean the same here
        raise DataError(f"{origin}: {name} is not a readable CIFAR-10 batch ({exc})") from exc


def _batch(
    members: dict[str, bytes], name: str, n_classes: int, origin: Path
) -> tuple[torch.Tensor, torch.Tensor]:
    batch = _unpickle(members, name, origin)
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = batch.get(b"labels") if isinstance(batch, dict) else None
    row = 3 * SIDE * SIDE
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2):
        raise DataError(f"{origin}: {name} holds no uint8 N×{row} 'data' array")
    if data.shape[1] != row:
        raise DataError(f"{origin}: {name} rows are {data.shape[1]} bytes, not {row}")
    if not isinstance(labels, list) or len(labels) != len(data):
        raise DataError(f"{origin}: {name} needs one label per image under 'labels'")
    try:
        targets = torch.tensor(labels, dtype=torch.int64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"{origin}: {name} labels are not integers ({exc})") from exc
    if len(targets) and not 0 <= int(targets.min()) <= int(targets.max()) < n_classes:
        raise DataError(f"{origin}: {name} has labels outside 0..{n_classes - 1}")
    return torch.from_numpy(data.reshape(-1, 3, SIDE, SIDE).copy()), targets
