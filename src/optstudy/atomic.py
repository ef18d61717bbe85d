"""Atomic file writes: a reader sees the old file or the complete new one, never a torn one.

Each write goes to a temporary file beside its destination (``.<name>.<random>.tmp``), is
flushed to disk and renamed onto the destination. A write that fails for lack of space or
permission raises :class:`~optstudy.errors.WriteError` naming the destination, and leaves the
old file as it was.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from optstudy.errors import writing

TEMP_SUFFIX = ".tmp"  # of the temporary files: a process killed while writing leaves one


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it onto ``path``."""
    path = Path(path)
    with writing(path):
        _write_and_rename(path, write)


def _write_and_rename(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        _flush_to_disk(tmp)  # a file system may report a full disk only now (NFS)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; use the usual mode
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _flush_to_disk(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def leftover_temp_files(directory: Path) -> list[Path]:
    """The temporary files of writes into ``directory`` that did not finish (a killed
    process leaves them): never taken for the files they were to replace."""
    return sorted(Path(directory).glob(f".*{TEMP_SUFFIX}"))


def atomic_save(path: Path, dump: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` atomically through ``dump(file)`` on a binary file object (e.g.
    ``torch.save(obj, file)``: through a file object its write errors keep their errno)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as file:
            dump(file)

    atomic_write(path, write)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def atomic_write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Write ``rows`` under a header of ``columns`` as CSV to ``path`` atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
