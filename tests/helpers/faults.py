"""Real faults brought upon a run from inside: test callbacks that act at a chosen training
step and once across attempts (a marker file outside the run directory remembers it) — a disk
that fills up, SIGKILL in the middle of a checkpoint write, a run that holds its directory until
the test releases it — and a data source whose decoders meet before they write the cache."""

import builtins
import errno
import io
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl

from optstudy.data.splits import ImageSplits
from optstudy.data.synthetic import SyntheticSource


def first_time(marker: str) -> bool:
    """True once: creates ``marker``, which makes every later call (a later attempt) False."""
    try:
        Path(marker).touch(exist_ok=False)
    except FileExistsError:
        return False
    return True


class FillDisk(pl.Callback):
    """At global step ``step``, fill the file system of ``ballast`` (a small one the test
    mounted) as another program filling a shared disk would. With ``inject`` (no file system
    could be mounted), make this process's writes under ``ballast``'s folder fail with ENOSPC
    from then on instead, half of each write landing first."""

    def __init__(self, step: int, ballast: str, marker: str, inject: bool = False) -> None:
        self.step, self.ballast, self.marker, self.inject = step, Path(ballast), marker, inject

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        """Fill the disk at the step."""
        if trainer.global_step != self.step or not first_time(self.marker):
            return
        if self.inject:
            refuse_writes_under(self.ballast.parent)
            return
        try:
            with open(self.ballast, "wb") as f:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


def no_space() -> None:
    """What a write on a full disk meets."""
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def sigkill() -> None:
    """What a write of a process killed meanwhile meets."""
    os.kill(os.getpid(), signal.SIGKILL)


class _FaultyFile:
    """A file opened for writing that meets ``fault`` halfway through its first write."""

    def __init__(self, file: io.IOBase, fault: Callable[[], None]) -> None:
        self._file, self._fault = file, fault

    def write(self, data: bytes | str) -> int:
        self._file.write(data[: len(data) // 2])
        self._file.flush()
        self._fault()
        raise AssertionError("the fault did not stop the write")

    def __getattr__(self, name: str) -> object:
        return getattr(self._file, name)

    def __enter__(self) -> "_FaultyFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()


def faulty_open(root: Path, fault: Callable[[], None]) -> Callable[..., object]:
    """``open`` whose files opened for writing below ``root`` meet ``fault`` halfway through
    their first write (Python's, pathlib's, fsspec's and torch.save's writes, once installed
    as builtins.open and io.open)."""
    real_open = io.open
    root = Path(root).resolve()

    def open_(file, mode="r", *args, **kwargs):
        opened = real_open(file, mode, *args, **kwargs)
        path = Path(file).resolve() if isinstance(file, str | os.PathLike) else None
        if path is not None and root in path.parents and set(mode) & set("wax+"):
            return _FaultyFile(opened, fault)
        return opened

    return open_


def refuse_writes_under(root: Path) -> None:
    """From now on, files this process opens for writing below ``root`` act as on a full
    disk: half of a write lands, then ENOSPC."""
    builtins.open = io.open = faulty_open(root, no_space)


class _KillWhenPickled:
    """Kills its process when pickled: in the middle of writing the checkpoint it is in."""

    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGKILL)


class KillWhileSaving(pl.Callback):
    """SIGKILL this process while it writes its first checkpoint at or after global step
    ``step``."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, marker

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        """Put something in the checkpoint that kills the process while it is written."""
        if trainer.global_step >= self.step and first_time(self.marker):
            checkpoint["kill"] = _KillWhenPickled()


class HoldUntil(pl.Callback):
    """At the start of training, create ``holding`` and wait until ``release`` exists: the
    run holds its directory while the test tries others in it."""

    def __init__(self, release: str, holding: str, timeout_s: float = 600) -> None:
        self.release, self.holding, self.timeout_s = Path(release), Path(holding), timeout_s

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Hold until released."""
        self.holding.touch()
        deadline = time.monotonic() + self.timeout_s
        while not self.release.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"HoldUntil: {self.release} never appeared")
            time.sleep(0.05)


class MeetingSource(SyntheticSource):
    """Synthetic images whose decoding ends only once ``parties`` processes have decoded them
    (each leaves its pid in the folder ``meeting``): they then write its cache file at once."""

    def __init__(self, meeting: str, parties: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.meeting, self.parties = Path(meeting), parties

    def load(self) -> ImageSplits:
        """Decode, then wait for the others."""
        splits = super().load()
        (self.meeting / str(os.getpid())).touch()
        deadline = time.monotonic() + 300
        while len(list(self.meeting.iterdir())) < self.parties:
            if time.monotonic() > deadline:
                raise RuntimeError(f"MeetingSource: the others never came to {self.meeting}")
            time.sleep(0.01)
        return splits
