"""MNIST-family sources: four IDX files (gz or raw) found locally or downloaded and verified."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from optstudy.data.download import download
from optstudy.data.fingerprint import files_fingerprint
from optstudy.data.idx import read_idx
from optstudy.data.splits import ImageSplits
from optstudy.errors import DataError

log = logging.getLogger(__name__)

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# The files as messages name them: gzipped or not, both are read.
NAMES = ", ".join(FILES.values()) + ", each gzipped (.gz) or not"


class IdxSource:
    """A data set stored as the four MNIST-style IDX files.

    The files are looked for in ``root`` when it is given (``data.root``: it must hold them),
    else in each of ``search_dirs`` in turn; a folder counts only if it holds all four (``.gz``
    or uncompressed). If none does and ``md5`` is given, the ``.gz`` files are downloaded from
    ``base_url`` into ``download_dir`` and checked against those md5 sums.
    """

    def __init__(
        self,
        name: str,
        classes: Sequence[str],
        root: str | None = None,
        search_dirs: Sequence[str] = (),
        base_url: str | None = None,
        md5: dict[str, str] | None = None,
        download_dir: str | None = None,
        download: bool = True,
    ) -> None:
        self.name = name
        self.classes = list(classes)
        self.root = Path(root) if root else None
        self.candidates = [Path(p) for p in search_dirs]
        self.base_url = base_url
        self.md5 = dict(md5 or {})
        self.download_dir = Path(download_dir) if download_dir else None
        self.download = download
        self._files: list[Path] | None = None
        self._fingerprint: str | None = None

    def files(self) -> list[Path]:
        """The four files in FILES order, locating or downloading them on first use."""
        if self._files is None:
            self._files = self._locate() or self._fetch()
        return self._files

    def fingerprint(self) -> str:
        """Content hash of the raw files (keys the decoded cache), computed once."""
        if self._fingerprint is None:
            self._fingerprint = files_fingerprint(self.files())
        return self._fingerprint

    def load(self) -> ImageSplits:
        """Decode the IDX files into uint8 image and int64 label tensors."""
        arrays = {key: read_idx(path) for key, path in zip(FILES, self.files(), strict=True)}
        for split in ("train", "test"):
            images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise DataError(
                    f"{self.name} {split}: expected N×H×W images and N labels, "
                    f"got {images.shape} and {labels.shape}"
                )
            if labels.size and int(labels.max()) >= len(self.classes):
                raise DataError(
                    f"{self.name} {split}: label {int(labels.max())} out of range "
                    f"for {len(self.classes)} classes"
                )
        return ImageSplits(
            **{
                key: torch.from_numpy(np.ascontiguousarray(a[:, None] if a.ndim == 3 else a)).to(
                    torch.uint8 if a.ndim == 3 else torch.int64
                )
                for key, a in arrays.items()
            },
            classes=self.classes,
        )

    def _locate(self) -> list[Path] | None:
        if self.root is not None:
            return self._in_root(self.root)
        for folder in self.candidates:
            found = [_existing(folder / stem) for stem in FILES.values()]
            if all(found):
                log.info("%s: using IDX files in %s", self.name, folder)
                return found  # type: ignore[return-value]
        return None

    def _in_root(self, root: Path) -> list[Path]:
        """The four files in ``root`` (data.root, given explicitly): all there, or an error."""
        found = [_existing(root / stem) for stem in FILES.values()]
        if all(found):
            log.info("%s: using IDX files in %s", self.name, root)
            return found  # type: ignore[return-value]
        missing = [stem for stem, path in zip(FILES.values(), found, strict=True) if not path]
        problem = "does not exist" if not root.is_dir() else f"lacks {', '.join(missing)}"
        raise DataError(
            f"data.root={root} {problem}: it must hold the four {self.name} IDX files "
            f"({NAMES}); fix data.root, or drop it to use the default places"
        )

    def _fetch(self) -> list[Path]:
        looked = ", ".join(str(p) for p in self.candidates) or "(no folders configured)"
        hint = (
            f"{self.name} not found: no folder holds the four IDX files ({NAMES}). "
            f"Looked in: {looked}."
        )
        if not (self.download and self.base_url and self.md5 and self.download_dir):
            raise DataError(hint + " Set data.root to a folder that holds them.")
        try:
            return [
                download(
                    self.base_url.rstrip("/") + f"/{stem}.gz",
                    self.md5[stem + ".gz"],
                    self.download_dir,
                    f"{stem}.gz",
                    timeout=30,
                )
                for stem in FILES.values()
            ]
        except Exception as exc:  # network errors come in many types; all end the same way
            raise DataError(
                f"{hint} Download from {self.base_url} failed ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}). "
                "Set data.root to a folder that holds the files"
                " (on Debian/Ubuntu, Fashion-MNIST: apt-get install dataset-fashion-mnist)."
            ) from exc


def _existing(stem: Path) -> Path | None:
    for path in (stem.with_name(stem.name + ".gz"), stem):
        if path.is_file():
            return path
    return None
