"""Decode a source once and keep the result as a safe-to-load tensor file that verifies itself.

A cache file holds the decoded splits and the sha256 of their content. One that does not load,
or whose content does not match its sha256 (a full disk, an interrupted copy, a partial
``dvc pull``), is reported in one warning line, removed and decoded again from the raw data.
Files are written atomically, so processes that build the same cache at once (the first jobs
of a sweep) each end with a complete file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from contextlib import suppress
from pathlib import Path
from typing import Any, Protocol

import torch

from optstudy.atomic import atomic_save
from optstudy.data.splits import ImageSplits
from optstudy.errors import DataError

log = logging.getLogger(__name__)

# Part of every cache file's name: a file of an older layout is not read, but decoded anew.
CACHE_FORMAT = 2
DIGEST_KEY = "sha256"  # the recorded fingerprint of the content, beside the splits' keys
TENSORS = {  # key → (dtype, dimensions)
    "train_images": (torch.uint8, 4),
    "train_labels": (torch.int64, 1),
    "test_images": (torch.uint8, 4),
    "test_labels": (torch.int64, 1),
}


class Source(Protocol):
    """What a data source provides: a name, a content fingerprint, and its decoded splits."""

    name: str

    def fingerprint(self) -> str: ...

    def load(self) -> ImageSplits: ...


class DamagedCache(DataError):
    """A cache file does not load, or does not hold what it recorded."""


def cache_file(source: Source, cache_dir: Path) -> Path:
    """Where the decoded tensors of ``source`` live; the name changes when its raw files do."""
    key = hashlib.sha256(f"{CACHE_FORMAT}:{source.fingerprint()}".encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{source.name}-{key}.pt"


def content_digest(record: dict[str, Any]) -> str:
    """sha256 of the splits in ``record`` (a cache file's content): every tensor's dtype,
    shape and bytes, and the class names."""
    h = hashlib.sha256()
    for key in TENSORS:
        tensor = record[key].contiguous()
        h.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        h.update(tensor.numpy().data)
    h.update(json.dumps(record["classes"]).encode())
    return h.hexdigest()


def prepare(source: Source, cache_dir: Path) -> Path:
    """Decode ``source`` into ``cache_dir`` unless a sound cache file of it exists (a damaged
    one is reported, removed and decoded again); return the file."""
    path = cache_file(source, cache_dir)
    if path.exists():
        seen = path.stat()
        try:
            load_shared(path)
            return path
        except DamagedCache as exc:
            log.warning("%s; removed it, decoding %s again", exc, source.name)
            _remove_if_unchanged(path, seen)
    log.info("decoding %s into %s", source.name, path)
    splits = source.load().to_dict()
    record = {**splits, DIGEST_KEY: content_digest(splits)}
    atomic_save(path, lambda file: torch.save(record, file))
    return path


def _remove_if_unchanged(path: Path, seen: os.stat_result) -> None:
    """Remove ``path`` unless another process has replaced it since ``seen`` (with a sound
    file, built at the same time)."""
    with suppress(FileNotFoundError):
        if path.stat().st_ino == seen.st_ino:
            path.unlink()


def load_prepared(path: Path) -> ImageSplits:
    """Load and verify a cache file written by :func:`prepare` (tensors and strings only):
    :class:`DamagedCache` when it does not load, lacks a split or does not match its sha256."""
    try:
        record = torch.load(path, weights_only=True)
    except Exception as exc:  # torch reports a torn or foreign file in many ways
        raise DamagedCache(
            f"cache file {path} is damaged ({str(exc).strip().splitlines()[0]})"
        ) from exc
    problem = _problem(record)
    if problem:
        raise DamagedCache(f"cache file {path} is damaged ({problem})")
    del record[DIGEST_KEY]
    return ImageSplits.from_dict(record)


def _problem(record: Any) -> str | None:
    """What is wrong with the content of a cache file, if anything."""
    if not isinstance(record, dict) or set(record) != {*TENSORS, "classes", DIGEST_KEY}:
        return "not a cache file of this version"
    if not all(isinstance(name, str) for name in record["classes"]):
        return "its class names are not strings"
    for key, (dtype, dims) in TENSORS.items():
        tensor = record[key]
        if not isinstance(tensor, torch.Tensor) or tensor.dtype != dtype or tensor.dim() != dims:
            return f"{key} is not a {dims}-d {dtype} tensor"
    if content_digest(record) != record[DIGEST_KEY]:
        return "its content does not match its recorded sha256"
    return None


@functools.lru_cache(maxsize=1)
def _load_once(path: Path, version: tuple[int, int, int]) -> ImageSplits:
    return load_prepared(path)


def load_shared(path: Path) -> ImageSplits:
    """:func:`load_prepared`, read once per process while the file stays the same: the runs of
    a group (one process, one data set) share it. Treat the tensors as read-only."""
    stat = Path(path).stat()
    return _load_once(Path(path).resolve(), (stat.st_ino, stat.st_mtime_ns, stat.st_size))
