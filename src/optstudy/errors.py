"""Errors users can fix themselves: the entry points print them as one line and exit non-zero."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# errno values of a write that failed for lack of space, and for lack of permission.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
NO_PERMISSION = (errno.EACCES, errno.EPERM, errno.EROFS)


class OptstudyError(Exception):
    """Base class of expected, user-fixable errors (bad config, missing or corrupt data)."""


class ConfigError(OptstudyError):
    """A configuration value is invalid."""


class DataError(OptstudyError):
    """A data set is missing, unreadable or does not match what its config declares."""


class WriteError(OptstudyError):
    """A file could not be written for lack of space or permission."""


class RunDirInUse(OptstudyError):
    """Another run holds the run directory."""


class RunInterrupted(Exception):
    """The run was stopped by SIGTERM or Ctrl-C after saving a checkpoint it can resume from;
    the process exits with ``exit_code`` (128 + the signal's number, as a shell reports it)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        yield current
        seen.add(id(current))
        current = current.__cause__ or current.__context__


def find_user_error(exc: BaseException) -> OptstudyError | None:
    """The expected error behind ``exc`` (libraries such as Hydra wrap it), if there is one."""
    return next((e for e in _chain(exc) if isinstance(e, OptstudyError)), None)


def as_write_error(exc: BaseException, path: Path | str) -> WriteError | None:
    """``exc`` as a :class:`WriteError` naming ``path`` when it (or an error behind it: torch
    and fsspec wrap them) is a write that failed for lack of space or permission; an existing
    :class:`WriteError` behind it is returned as it is. None for any other error."""
    for error in _chain(exc):
        if isinstance(error, WriteError):
            return error
        if isinstance(error, OSError) and error.errno in (*NO_SPACE, *NO_PERMISSION):
            fix = "free some space" if error.errno in NO_SPACE else "make it writable"
            return WriteError(
                f"cannot write {path}: {error.strerror}; {fix}, then run the same command again"
            )
    return None


@contextmanager
def writing(path: Path | str) -> Iterator[None]:
    """Raise a write of the ``with`` block that fails for lack of space or permission as the
    :class:`WriteError` of :func:`as_write_error`, naming ``path``."""
    try:
        yield
    except Exception as exc:
        error = as_write_error(exc, path)
        if error is None or error is exc:
            raise
        raise error from exc
