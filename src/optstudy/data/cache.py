"""Decode a source once and keep the result as a safe-to-load tensor file."""

from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path
from typing import Protocol

import torch

from optstudy.atomic import atomic_write
from optstudy.data.splits import ImageSplits

log = logging.getLogger(__name__)


class Source(Protocol):
    """What a data source provides: a name, a content fingerprint, and its decoded splits."""

    name: str

    def fingerprint(self) -> str: ...

    def load(self) -> ImageSplits: ...


def cache_file(source: Source, cache_dir: Path) -> Path:
    """Where the decoded tensors of ``source`` live; the name changes when its raw files do."""
    key = hashlib.sha256(source.fingerprint().encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{source.name}-{key}.pt"


def prepare(source: Source, cache_dir: Path) -> Path:
    """Decode ``source`` into ``cache_dir`` unless an up-to-date cache file exists; return it."""
    path = cache_file(source, cache_dir)
    if not path.exists():
        log.info("decoding %s into %s", source.name, path)
        splits = source.load()
        atomic_write(path, lambda tmp: torch.save(splits.to_dict(), tmp))
    return path


def load_prepared(path: Path, mmap: bool = False) -> ImageSplits:
    """Load a cache file written by :func:`prepare` (tensors and strings only); with ``mmap``
    the tensors map the file instead of being read (cheap, to inspect shapes)."""
    return ImageSplits.from_dict(torch.load(path, weights_only=True, mmap=mmap))


@functools.lru_cache(maxsize=1)
def _load_once(path: Path, version: tuple[int, int]) -> ImageSplits:
    return load_prepared(path)


def load_shared(path: Path) -> ImageSplits:
    """:func:`load_prepared`, read once per process while the file stays the same: the runs of
    a group (one process, one data set) share it. Treat the tensors as read-only."""
    stat = Path(path).stat()
    return _load_once(Path(path).resolve(), (stat.st_mtime_ns, stat.st_size))
