"""CIFAR-10 source: the official python tarball (or its extracted folder), verified, then parsed."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from optstudy.data.cifar_batches import FOLDER, MEMBERS, parse_members, read_members
from optstudy.data.download import download
from optstudy.data.fingerprint import file_digest, files_fingerprint
from optstudy.data.splits import ImageSplits
from optstudy.errors import DataError

log = logging.getLogger(__name__)

ARCHIVE = "cifar-10-python.tar.gz"


class CifarSource:
    """CIFAR-10 in its official python format.

    Looked for in ``root`` when it is given (``data.root``: it must hold it), else in each of
    ``search_dirs``: a folder counts if it holds the tarball (``cifar-10-python.tar.gz``), the
    extracted ``cifar-10-batches-py/`` folder, or is that folder; ``root`` may also be the
    tarball itself. Otherwise the tarball is downloaded
    from ``url`` into ``download_dir``. Nothing is unpickled before the tarball's md5 matches
    ``md5`` (an extracted folder: each file's md5 matches ``extracted_md5``); ``md5=None`` skips
    every check, with a warning.
    """

    def __init__(
        self,
        name: str = "cifar10",
        root: str | None = None,
        search_dirs: Sequence[str] = (),
        url: str | None = None,
        md5: str | None = None,
        extracted_md5: Mapping[str, str] | None = None,
        download_dir: str | None = None,
        download: bool = True,
    ) -> None:
        self.name = name
        self.root = Path(root) if root else None
        self.candidates = [Path(p) for p in search_dirs]
        self.url = url
        self.md5 = md5
        self.extracted_md5 = dict(extracted_md5 or {})
        self.download_dir = Path(download_dir) if download_dir else None
        self.download = download
        self._location: Path | None = None
        self._fingerprint: str | None = None

    def location(self) -> Path:
        """The verified tarball or extracted folder, found or downloaded on first use."""
        if self._location is None:
            found = self._locate()
            if self.md5 is None:
                log.warning("data.md5 is null: %s is NOT checked against a checksum", self.name)
            self._location = self._verified(found) if found else self._fetch()
        return self._location

    def fingerprint(self) -> str:
        """Content hash of the tarball or of the extracted batch files (keys the cache)."""
        if self._fingerprint is None:
            location = self.location()
            self._fingerprint = files_fingerprint(
                [location] if location.is_file() else [location / name for name in MEMBERS]
            )
        return self._fingerprint

    def load(self) -> ImageSplits:
        """Decode the five training batches and the test batch (after verification)."""
        location = self.location()
        return parse_members(read_members(location), location)

    def _locate(self) -> Path | None:
        for folder in [self.root] if self.root else self.candidates:
            for candidate in (folder, folder / ARCHIVE, folder / FOLDER):
                if candidate.is_file() or _is_extracted(candidate):
                    log.info("%s: using %s", self.name, candidate)
                    return candidate
        if self.root is not None:
            wanted = f"{ARCHIVE}, a folder holding it, or its extracted {FOLDER}/ folder"
            problem = f"does not exist (it must be {wanted})"
            if self.root.exists():
                problem = f"is not {wanted}"
            raise DataError(
                f"data.root={self.root} {problem}; fix data.root, or drop it to use the "
                "default places"
            )
        return None

    def _verified(self, location: Path) -> Path:
        if self.md5 is None:
            return location
        if location.is_file():
            _check_md5(location, self.md5, "data.md5")
            return location
        for name in MEMBERS:
            expected = self.extracted_md5.get(name)
            if expected is None:
                raise DataError(
                    f"no md5 for {name} in data.source.extracted_md5 to check {location} "
                    "against (data.md5=null skips the checks)"
                )
            _check_md5(location / name, expected, f"data.source.extracted_md5.{name}")
        return location

    def _fetch(self) -> Path:
        looked = ", ".join(str(p) for p in self.candidates) or "(no folders configured)"
        hint = f"{self.name} not found: no {ARCHIVE} or extracted {FOLDER}/ folder in: {looked}."
        if not (self.download and self.url and self.download_dir):
            raise DataError(hint + " Set data.root to the folder that holds it.")
        try:
            return download(self.url, self.md5, self.download_dir, ARCHIVE, timeout=60)
        except Exception as exc:  # network and hash errors come in many types; all end the same
            raise DataError(
                f"{hint} Download from {self.url} failed ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}). "
                "Set data.root to a folder that holds the tarball."
            ) from exc


def _is_extracted(folder: Path) -> bool:
    return all((folder / name).is_file() for name in MEMBERS)


def _check_md5(path: Path, expected: str, key: str) -> None:
    actual = file_digest(path, "md5")
    if actual != expected.lower():
        raise DataError(
            f"checksum mismatch: {path} has md5 {actual}, but {key} is {expected}; the file is "
            "corrupt, truncated or not the official CIFAR-10 (data.md5=null skips the check)"
        )
