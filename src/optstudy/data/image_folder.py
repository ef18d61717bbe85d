"""Any data set laid out as one sub-folder of images per class, decoded once to RGB uint8."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from optstudy.data.fingerprint import files_fingerprint
from optstudy.data.image_decode import decode_rgb
from optstudy.data.splits import ImageSplits, check_test_fraction, seeded_split
from optstudy.errors import DataError
from optstudy.image_size import ImageSize, image_hw

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


class ImageFolderSource:
    """Images under ``root/<class name>/`` (sub-folders included), classes in sorted order.

    Files whose extension is not in ``extensions`` and hidden files are ignored. Every image is
    converted to RGB and resized to ``image_size`` (n for n×n, or [height, width]). A file
    that does not decode is an error, or with ``skip_corrupt`` a warning naming it. There is
    no official test split: with ``test_fraction`` > 0 a share drawn by ``split_seed`` becomes
    the test split, else it is empty.
    """

    def __init__(
        self,
        name: str,
        root: str | None,
        image_size: ImageSize,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        skip_corrupt: bool = False,
        test_fraction: float = 0.0,
        split_seed: int = 0,
    ) -> None:
        self.name = name
        self.root = Path(root) if root else None
        self.image_size = image_hw(image_size)
        self.extensions = tuple(e.lower() for e in extensions)
        self.skip_corrupt = skip_corrupt
        self.test_fraction = check_test_fraction(test_fraction)
        self.split_seed = split_seed
        self._classes: dict[str, list[Path]] | None = None
        self._fingerprint: str | None = None

    def class_files(self) -> dict[str, list[Path]]:
        """Image files of each class, classes and files in sorted order (scanned once)."""
        if self._classes is None:
            self._classes = self._scan()
        return self._classes

    def fingerprint(self) -> str:
        """Hash of every image's path and content, and of the decoding settings."""
        if self._fingerprint is None:
            files = [path for paths in self.class_files().values() for path in paths]
            test = f"-test{self.test_fraction}-seed{self.split_seed}" if self.test_fraction else ""
            self._fingerprint = (
                f"{files_fingerprint(files, root=self.root)}-{self.image_size}-{self.extensions}"
                f"-skip{self.skip_corrupt}{test}"
            )
        return self._fingerprint

    def load(self) -> ImageSplits:
        """Decode every image (Pillow), then carve the optional seeded test share."""
        class_files = self.class_files()
        classes = list(class_files)
        files = [(path, label) for label, c in enumerate(classes) for path in class_files[c]]
        images = np.empty((len(files), *self.image_size, 3), dtype=np.uint8)
        failed: dict[int, str] = {}
        for i, (path, _) in enumerate(files):
            try:
                images[i] = decode_rgb(path, self.image_size)
            except Exception as exc:  # a damaged file can fail in many ways; each means "corrupt"
                failed[i] = f"{path.relative_to(self.root)} ({exc})"
        self._report(list(failed.values()))
        kept = [i for i in range(len(files)) if i not in failed]
        labels = torch.tensor([files[i][1] for i in kept], dtype=torch.int64)
        self._check_classes_left(classes, labels)
        pixels = torch.from_numpy(images[kept] if failed else images).permute(0, 3, 1, 2)
        pixels = pixels.contiguous()
        if not self.test_fraction:
            no_test = torch.empty((0, *pixels.shape[1:]), dtype=torch.uint8)
            return ImageSplits(pixels, labels, no_test, labels[:0].clone(), classes)
        train, test = seeded_split(len(labels), self.test_fraction, self.split_seed)
        return ImageSplits(pixels[train], labels[train], pixels[test], labels[test], classes)

    def _scan(self) -> dict[str, list[Path]]:
        if self.root is None:
            raise DataError(
                f"{self.name}: data.root is not set; point it at the folder that holds one "
                "sub-folder of images per class"
            )
        if not self.root.is_dir():
            raise DataError(f"{self.name}: data.root {self.root} does not exist or is not a folder")
        folders = sorted(p for p in self.root.iterdir() if p.is_dir() and not _hidden(p.name))
        if len(folders) < 2:
            raise DataError(
                f"{self.root} holds {len(folders)} class sub-folder(s); an image folder needs "
                "at least 2 (one sub-folder of images per class)"
            )
        classes = {folder.name: self._images_in(folder) for folder in folders}
        empty = [name for name, paths in classes.items() if not paths]
        if empty:
            raise DataError(
                f"{self.root}: class folder(s) {', '.join(map(repr, empty))} hold no image "
                f"files ({' '.join(self.extensions)})"
            )
        return classes

    def _images_in(self, folder: Path) -> list[Path]:
        return sorted(
            path
            for path in folder.rglob("*")
            if path.suffix.lower() in self.extensions
            and path.is_file()
            and not any(_hidden(part) for part in path.relative_to(folder).parts)
        )

    def _report(self, failed: list[str]) -> None:
        if failed and not self.skip_corrupt:
            raise DataError(
                f"{len(failed)} image file(s) in {self.root} cannot be decoded: "
                f"{'; '.join(failed)} (data.skip_corrupt=true skips such files)"
            )
        if failed:
            log.warning(
                "%s: skipped %d image file(s) that cannot be decoded: %s",
                self.name,
                len(failed),
                "; ".join(failed),
            )

    def _check_classes_left(self, classes: list[str], labels: torch.Tensor) -> None:
        counts = torch.bincount(labels, minlength=len(classes))
        empty = [c for c, n in zip(classes, counts.tolist(), strict=True) if n == 0]
        if empty:
            raise DataError(
                f"{self.root}: no image of class(es) {', '.join(map(repr, empty))} decodes"
            )


def _hidden(name: str) -> bool:
    return name.startswith(".")
