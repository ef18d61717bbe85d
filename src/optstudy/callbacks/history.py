"""The per-epoch record of a run (kept by every run) and its ``history.csv`` (a callback)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from optstudy.artifacts import HISTORY_COLUMNS
from optstudy.atomic import atomic_write_csv

RECORDER_KEY = "EpochRecorder"  # the EpochRecorder's key among a checkpoint's callback states


class Stopwatch:
    """Seconds of training across resumes: the time since :meth:`start`, plus the seconds an
    earlier attempt had taken (kept in checkpoints)."""

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._before = 0.0  # seconds spent before a resume

    def start(self) -> None:
        """Start (again) from now."""
        self._start = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds so far, across resumes."""
        return self._before + time.perf_counter() - self._start

    def resume(self, elapsed: float) -> None:
        """Continue from ``elapsed`` seconds (an earlier attempt's)."""
        self._before = float(elapsed)


class EpochRecorder(pl.Callback):
    """Record one row per finished training epoch: the lr it started with, its epoch metrics
    (validation of the epoch included) and seconds since training began. Every run has one,
    whatever callbacks are configured: ``metrics.json`` is computed from its rows. Rows, time
    and the current epoch's lr are kept in checkpoints, so a resumed run keeps its record."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self.clock = Stopwatch()
        self._lr = math.nan

    @property
    def state_key(self) -> str:
        """One fixed key in the checkpoint's callback states."""
        return RECORDER_KEY

    def elapsed(self) -> float:
        """Seconds of training (with validation) so far, across resumes."""
        return self.clock.elapsed()

    def state_dict(self) -> dict[str, Any]:
        """Rows, elapsed time and the current epoch's lr."""
        return {"rows": self.rows, "elapsed": self.elapsed(), "lr": self._lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore rows, elapsed time and lr from a checkpoint."""
        self.rows = [dict(r) for r in state["rows"]]
        self.clock.resume(state["elapsed"])
        self._lr = float(state["lr"])

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the clock."""
        self.clock.start()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Remember the lr this epoch starts with."""
        self._lr = trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Record the epoch, unless the run diverged in it."""
        if trainer.sanity_checking or getattr(pl_module, "diverged", False):
            return
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch, "lr": self._lr}
        for key in HISTORY_COLUMNS[2:-1]:
            row[key] = float(metrics[key]) if key in metrics else math.nan
        row["elapsed_s"] = round(self.elapsed(), 3)
        self.rows.append(row)


def recorder_of(trainer: pl.Trainer) -> EpochRecorder:
    """The :class:`EpochRecorder` among the trainer's callbacks."""
    return next(cb for cb in trainer.callbacks if isinstance(cb, EpochRecorder))


class EpochHistory(pl.Callback):
    """Write the run's epoch record (:class:`EpochRecorder`, which comes first among the
    callbacks) to ``path`` as CSV: a header at the start of training, so a run that diverges
    before its first epoch ends still has the file, then the whole file again after each
    epoch, atomically."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write the record as it stands."""
        self._write(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write the record with this epoch's row."""
        self._write(trainer)

    def _write(self, trainer: pl.Trainer) -> None:
        if trainer.is_global_zero:
            atomic_write_csv(self.path, HISTORY_COLUMNS, recorder_of(trainer).rows)
