"""The run directory: writable before Hydra creates it and before anything is trained, owned
by one run at a time (a lock), and holding the record of the job that owns it."""

from __future__ import annotations

import copy
import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from optstudy.artifacts import CONFIG_FILE, HYDRA_FILE, LOCK_FILE, OVERRIDES_FILE
from optstudy.atomic import atomic_write_text
from optstudy.errors import ConfigError, RunDirInUse, WriteError, writing

log = logging.getLogger(__name__)


def check_writable(directory: Path) -> None:
    """Raise :class:`ConfigError` unless ``directory`` exists or can be made, and takes files."""
    directory = Path(directory)
    existing = next((p for p in (directory, *directory.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise ConfigError(
            f"cannot create the run directory {directory}: {existing} is not a folder"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test-{os.getpid()}"  # DDP processes check at once
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"cannot write the run directory {directory}: {exc.strerror or exc}"
        ) from exc


@contextmanager
def owned(directory: Path) -> Iterator[None]:
    """Hold the lock of the run directory ``directory`` (its :data:`LOCK_FILE`, which names
    this process) for the ``with`` block; :class:`RunDirInUse`, naming the other process, when
    another run holds it. The lock ends with its process, however it ends (SIGKILL too): the
    lock file a killed run leaves behind is taken over."""
    path = Path(directory) / LOCK_FILE
    fd = _lock(path)
    try:
        yield
    finally:
        if fd is not None:
            path.unlink(missing_ok=True)  # while still held: a run waiting on it locks anew
            os.close(fd)


def _lock(path: Path) -> int | None:
    """Lock ``path`` and write this process into it; the open file's descriptor (None on a
    file system without locks)."""
    while True:
        with writing(path):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunDirInUse(
                f"{path.parent} is in use by another run ({holder}); wait for it to end or use "
                "another run directory"
            ) from None
        except OSError as exc:  # some NFS or Lustre mounts have no locks
            os.close(fd)
            path.unlink(missing_ok=True)
            log.warning("cannot lock %s (%s): runs in it are not kept apart", path, exc.strerror)
            return None
        if _same_file(fd, path):
            break
        os.close(fd)  # its holder removed it between our open and our lock: lock the new one
    try:
        with writing(path):
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
    except BaseException:
        path.unlink(missing_ok=True)
        os.close(fd)
        raise
    return fd


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _holder(fd: int) -> str:
    """The process named in a lock file (its holder writes itself in just after locking)."""
    for _ in range(10):
        text = os.pread(fd, 256, 0).decode(errors="replace").strip()
        if text:
            return text
        time.sleep(0.1)
    return "pid unknown"


def write_job_record(out_dir: Path, config: DictConfig, hydra: DictConfig) -> None:
    """Write the job record of ``out_dir`` in Hydra's format: :data:`HYDRA_FILE` (``hydra``,
    Hydra's config of the job: ``{"hydra": ...}``), :data:`OVERRIDES_FILE` and, last,
    :data:`CONFIG_FILE` (``config``, the run's config, interpolations kept), each atomically."""
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / HYDRA_FILE, OmegaConf.to_yaml(hydra))
    atomic_write_text(out_dir / OVERRIDES_FILE, OmegaConf.to_yaml(hydra.hydra.overrides.task))
    atomic_write_text(out_dir / CONFIG_FILE, OmegaConf.to_yaml(config))


class RunDirCheck(Callback):
    """Hydra callback: stop with one line (exit 2) when the run or sweep directory is unusable."""

    def _check(self, directory: str) -> None:
        from optstudy.cli import guarded

        guarded(lambda: check_writable(Path(directory)))

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Before a single run."""
        self._check(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Before a sweep."""
        self._check(config.hydra.sweep.dir)


class RecordNewJob(Callback):
    """Hydra callback: a job whose run directory holds no job record yet gets one at once, as
    Hydra's own writing of it did, so that a job that fails before training is still listed
    (incomplete) by the report. A directory that holds a record keeps it until a run is
    accepted there (:func:`optstudy.run.start` writes its own)."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Before each job."""
        out_dir = Path(config.hydra.runtime.output_dir)
        if (out_dir / CONFIG_FILE).exists():
            return
        task = copy.deepcopy(config)
        with read_write(task), open_dict(task):
            del task["hydra"]
        with suppress(WriteError):  # a full disk: the run's own first write reports it
            write_job_record(out_dir, task, OmegaConf.masked_copy(config, "hydra"))
