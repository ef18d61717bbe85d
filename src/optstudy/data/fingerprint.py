"""Content hashes that identify the raw files a data set was decoded from."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file's bytes, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def files_fingerprint(paths: Iterable[Path], root: Path | None = None) -> str:
    """One sha256 over the names (paths relative to ``root`` when given) and contents of
    several files, in the order given."""
    h = hashlib.sha256()
    for path in paths:
        h.update((Path(path).relative_to(root).as_posix() if root else Path(path).name).encode())
        h.update(file_digest(path, "sha256").encode())
    return h.hexdigest()
