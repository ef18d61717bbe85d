"""Optimizer diagnostics every ``interval`` steps, to ``diagnostics.csv`` and the loggers."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import Logger
from torch import Tensor, nn
from torch.optim import Optimizer

from optstudy.artifacts import DIAGNOSTICS_COLUMNS, WHOLE_MODEL
from optstudy.atomic import atomic_write_csv
from optstudy.errors import ConfigError
from optstudy.optim.step_diagnostics import Snapshot, measure, take_snapshot

# Columns of the whole-model row that go to the loggers, as "diagnostics/<column>".
LOGGED = DIAGNOSTICS_COLUMNS[3:]


class OptimizerDiagnostics(pl.Callback):
    """Measure optimizer steps 0, ``interval``, 2·``interval``, …: per layer the gradient,
    parameter and update norms, the distance from the initial parameters and the percentiles
    of the effective step size (see :mod:`optstudy.optim.step_diagnostics`).

    Rows go to ``path`` (rewritten atomically after each epoch) and the whole-model row to the
    loggers; they are kept in checkpoints, with the initial parameters, so a resumed run ends
    with the file of an uninterrupted one. Other steps cost nothing; only rank zero measures.
    """

    def __init__(self, path: str | Path, interval: int = 50) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ConfigError(
                f"callbacks.diagnostics.interval={interval} is invalid: must be an integer >= 1"
            )
        self.path = Path(path)
        self.interval = interval
        self.rows: list[dict[str, Any]] = []
        self._initial: dict[str, Tensor] = {}
        self._before: Snapshot | None = None

    def state_dict(self) -> dict[str, Any]:
        """The rows so far and the initial parameters, for checkpoints."""
        return {"rows": self.rows, "initial": self._initial}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore rows and initial parameters from a checkpoint."""
        self.rows = [dict(row) for row in state["rows"]]
        self._initial = dict(state["initial"])

    @staticmethod
    def _trainable(pl_module: pl.LightningModule) -> dict[str, nn.Parameter]:
        return {name: p for name, p in pl_module.named_parameters() if p.requires_grad}

    def start(self, params: dict[str, Tensor]) -> None:
        """Keep the initial ``params`` (by name), unless resumed with them, on their device."""
        if not self._initial:
            self._initial = {name: p.detach().clone() for name, p in params.items()}
        self._initial = {name: t.to(params[name].device) for name, t in self._initial.items()}

    def due(self, step: int) -> bool:
        """Whether optimizer step ``step`` is measured."""
        return step % self.interval == 0

    def record(
        self,
        before: Snapshot,
        params: dict[str, nn.Parameter],
        optimizer: Optimizer,
        loggers: Iterable[Logger],
    ) -> None:
        """Add the rows of the step ``optimizer`` took from ``before`` to ``params`` (after the
        step), and give the whole-model row to the ``loggers``."""
        rows = measure(before, params, self._initial, optimizer)
        self.rows += rows
        whole = next(row for row in rows if row["layer"] == WHOLE_MODEL)
        metrics = {f"diagnostics/{column}": whole[column] for column in LOGGED}
        for logger in loggers:
            logger.log_metrics(metrics, step=before.step)

    def write(self) -> None:
        """Rewrite the file with every row so far."""
        atomic_write_csv(self.path, DIAGNOSTICS_COLUMNS, self.rows)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Keep the initial parameters and write the file as it stands: a header at least, so
        a run that diverges at once still has one."""
        self.start(self._trainable(pl_module))
        self._write(trainer)

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        """On a measured step, copy the parameters and lrs the step starts from."""
        if (
            not self.due(trainer.global_step)
            or not trainer.is_global_zero
            or getattr(pl_module, "diverged", False)
        ):
            return
        params = self._trainable(pl_module).items()
        self._before = take_snapshot(trainer.global_step, trainer.current_epoch, params, optimizer)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        """After a measured step: its rows, and the whole-model row to the loggers."""
        if self._before is None:
            return
        before, self._before = self._before, None
        params = self._trainable(pl_module)
        self.record(before, params, trainer.optimizers[0], trainer.loggers)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Rewrite the file with every row so far."""
        self._write(trainer)

    def _write(self, trainer: pl.Trainer) -> None:
        if trainer.is_global_zero:
            self.write()
