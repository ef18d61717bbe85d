"""Write the per-epoch history of a run to ``history.csv``."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytorch_lightning as pl

from optstudy.atomic import atomic_write_csv

COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "elapsed_s")


class EpochHistory(pl.Callback):
    """Append one row per finished training epoch: the lr it started with, its epoch metrics,
    and seconds since training began. The file is rewritten atomically after each epoch."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, float]] = []
        self._start = time.perf_counter()
        self._elapsed_before = 0.0  # seconds spent before a resume
        self._lr = math.nan

    def elapsed(self) -> float:
        """Seconds of training (with validation) so far, across resumes."""
        return self._elapsed_before + time.perf_counter() - self._start

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the clock."""
        self._start = time.perf_counter()

    def state_dict(self) -> dict[str, object]:
        """Rows, elapsed time and the current epoch's lr: saved in checkpoints so that a
        resumed run keeps its history."""
        return {"rows": self.rows, "elapsed": self.elapsed(), "lr": self._lr}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore rows and elapsed time from a checkpoint."""
        self.rows = [dict(r) for r in state["rows"]]  # type: ignore[union-attr]
        self._elapsed_before = float(state["elapsed"])  # type: ignore[arg-type]
        self._lr = float(state["lr"])  # type: ignore[arg-type]

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Remember the lr this epoch starts with."""
        self._lr = trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Record the epoch (validation of this epoch has run by now) and rewrite the file."""
        if trainer.sanity_checking or getattr(pl_module, "diverged", False):
            return
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch, "lr": self._lr}
        for key in COLUMNS[2:-1]:
            row[key] = float(metrics[key]) if key in metrics else math.nan
        row["elapsed_s"] = round(self.elapsed(), 3)
        self.rows.append(row)
        self._write(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write the file as it stands (a header at least): a run that diverges before its first
        epoch ends still has a history, with no rows."""
        self._write(trainer)

    def _write(self, trainer: pl.Trainer) -> None:
        if trainer.is_global_zero:
            atomic_write_csv(self.path, COLUMNS, self.rows)
