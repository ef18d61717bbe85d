"""What each member of a fused group writes as its standalone run would: its ``history.csv``,
``diagnostics.csv``, ``checkpoints/`` (last and best), and its loggers' step and epoch values,
each from the member's own callback settings.

The callbacks a standalone run gets from ``conf/callbacks/`` are read for their settings, not
run: :class:`MemberOutputs` holds them per member and :class:`MemberRecords`, one Lightning
callback on the group's trainer, does their work for every member.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import Logger
from torch.optim import Optimizer

from optstudy.artifacts import FUSED_CHECKPOINT_KEY, HISTORY_COLUMNS
from optstudy.atomic import atomic_write, atomic_write_csv
from optstudy.callbacks import EpochHistory, OptimizerDiagnostics
from optstudy.errors import ConfigError
from optstudy.fused.fusable import PER_MEMBER_CALLBACKS
from optstudy.fused.member import Member
from optstudy.optim.step_diagnostics import Snapshot, take_snapshot

# The callbacks a member's outputs are made of (its interrupt checkpoint is the group's); any
# other runs once, on the group's trainer.
PER_MEMBER = tuple(get_class(name) for name in PER_MEMBER_CALLBACKS)


@dataclass
class MemberOutputs:
    """One member's configured outputs (its instantiated callbacks and loggers)."""

    loggers: list[Logger] = field(default_factory=list)
    history: EpochHistory | None = None
    diagnostics: OptimizerDiagnostics | None = None
    checkpoints: list[ModelCheckpoint] = field(default_factory=list)  # best.ckpt, last.ckpt
    lr_monitor: LearningRateMonitor | None = None
    early_stopping: EarlyStopping | None = None

    @classmethod
    def from_callbacks(cls, callbacks: Iterable[pl.Callback], loggers: list[Logger]):
        """Sort a member's callbacks (those of :data:`PER_MEMBER`; its interrupt checkpoint is
        the group's) into its outputs."""
        outputs = cls(loggers=loggers)
        slots = {
            EpochHistory: "history",
            OptimizerDiagnostics: "diagnostics",
            LearningRateMonitor: "lr_monitor",
            EarlyStopping: "early_stopping",
        }
        for callback in callbacks:
            if isinstance(callback, ModelCheckpoint):
                outputs.checkpoints.append(callback)
            slot = next((s for kind, s in slots.items() if isinstance(callback, kind)), None)
            if slot is not None:
                setattr(outputs, slot, callback)
        for checkpoint in outputs.checkpoints:
            if checkpoint.save_top_k not in (0, 1):
                raise ConfigError(
                    f"save_top_k={checkpoint.save_top_k} of a checkpoint callback is not "
                    "supported in a fused group: a member keeps one checkpoint of each (1) or "
                    "none (0)"
                )
        return outputs


def lr_names(optimizer: Optimizer) -> list[str]:
    """The names Lightning's ``LearningRateMonitor`` logs an optimizer's lrs under:
    ``lr-<class>``, with ``/pg<n>`` for each of several param groups."""
    name = f"lr-{type(optimizer).__name__}"
    groups = len(optimizer.param_groups)
    return [name if groups == 1 else f"{name}/pg{i + 1}" for i in range(groups)]


class MemberRecords(pl.Callback):
    """Write every member's files and log its values, at the moments its standalone run's
    callbacks would (see the module docstring). Keeps each member's epoch rows, the lr its
    current epoch started with, its best checkpoint score and its diagnostics in the group's
    checkpoints; after each epoch it saves the group's own checkpoint at ``group_checkpoint``
    (from which the same command resumes)."""

    def __init__(
        self, members: Sequence[Member], outputs: Sequence[MemberOutputs], group_checkpoint: Path
    ) -> None:
        self.members = members
        self.outputs = outputs
        self.group_checkpoint = Path(group_checkpoint)
        self.rows: list[list[dict[str, float]]] = [[] for _ in members]
        self.epoch_lrs = [math.nan for _ in members]
        # Per member, the best monitored value of each of its checkpoint callbacks so far.
        self.best: list[list[float | None]] = [[None for _ in o.checkpoints] for o in outputs]
        self._before: dict[int, Snapshot] = {}

    @property
    def state_key(self) -> str:
        """One fixed key in the checkpoint's callback states."""
        return "MemberRecords"

    def state_dict(self) -> dict[str, Any]:
        """Rows, epoch lrs, best scores and diagnostics of every member."""
        return {
            "rows": self.rows,
            "epoch_lrs": self.epoch_lrs,
            "best": self.best,
            "diagnostics": [
                o.diagnostics.state_dict() if o.diagnostics else None for o in self.outputs
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore them from a group checkpoint."""
        self.rows = [[dict(row) for row in rows] for rows in state["rows"]]
        self.epoch_lrs = list(state["epoch_lrs"])
        self.best = [list(values) for values in state["best"]]
        for outputs, diagnostics in zip(self.outputs, state["diagnostics"], strict=True):
            if outputs.diagnostics is not None:
                outputs.diagnostics.load_state_dict(diagnostics)

    def _training(self) -> Iterable[tuple[Member, MemberOutputs]]:
        return ((m, o) for m, o in zip(self.members, self.outputs, strict=True) if m.training)

    def write(self) -> None:
        """Write every member's history.csv and diagnostics.csv as they stand."""
        for rows, outputs in zip(self.rows, self.outputs, strict=True):
            if outputs.history is not None:
                atomic_write_csv(outputs.history.path, HISTORY_COLUMNS, rows)
            if outputs.diagnostics is not None:
                outputs.diagnostics.write()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Keep each member's initial weights for its diagnostics; write the files (headers
        at least, so a member that diverges at once still has them)."""
        for member, outputs in zip(self.members, self.outputs, strict=True):
            if outputs.diagnostics is not None:
                outputs.diagnostics.start(pl_module.member_params(member.index))
        if all(math.isnan(lr) for lr in self.epoch_lrs):  # a fresh start, not a resume
            self._next_epoch_lrs()
        self.write()

    def _log(self, outputs: MemberOutputs, metrics: dict[str, float], step: int) -> None:
        for logger in outputs.loggers:
            logger.log_metrics(metrics, step=step)

    def _log_lrs(self, trainer: pl.Trainer, interval: str) -> None:
        """Log each training member's lrs where its ``LearningRateMonitor`` would."""
        names = lr_names(trainer.optimizers[0])
        step = trainer.fit_loop.epoch_loop._batches_that_stepped
        for member, outputs in self._training():
            monitor, schedule = outputs.lr_monitor, member.schedule
            if monitor is None or schedule is None:
                continue
            wanted = monitor.logging_interval or schedule.interval
            if wanted == interval:
                self._log(outputs, dict(zip(names, schedule.lrs(), strict=True)), step)

    def _next_epoch_lrs(self) -> None:
        """Remember the lr each training member starts its next epoch with."""
        for member, _ in self._training():
            assert member.schedule is not None
            self.epoch_lrs[member.index] = member.schedule.lrs()[0]

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log epoch-interval lrs."""
        self._log_lrs(trainer, "epoch")

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        """On the steps whose values reach the loggers: step-interval lrs."""
        if trainer._logger_connector.should_update_logs:
            self._log_lrs(trainer, "step")

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        """On a member's measured step, copy the weights and lrs the step starts from."""
        step, epoch = trainer.global_step, trainer.current_epoch
        for member, outputs in self._training():
            if outputs.diagnostics is None or not outputs.diagnostics.due(step):
                continue
            assert member.schedule is not None
            params = pl_module.member_params(member.index)
            view = pl_module.member_optimizer(member.index, params, member.schedule.lrs())
            self._before[member.index] = take_snapshot(step, epoch, params.items(), view)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        """After the step: the measured members' diagnostics; on logging steps each training
        member's loss."""
        for index, before in sorted(self._before.items()):
            outputs = self.outputs[index]
            if self.members[index].training and outputs.diagnostics is not None:
                params = pl_module.member_params(index)
                lrs = [group["lr"] for group in before.groups]
                view = pl_module.member_optimizer(index, params, lrs)
                outputs.diagnostics.record(before, params, view, outputs.loggers)
        self._before.clear()
        if trainer._logger_connector.should_update_logs:
            step = trainer.fit_loop.epoch_loop._batches_that_stepped
            for member, outputs in self._training():
                loss = pl_module.step_losses[member.index]
                self._log(outputs, {"train_loss_step": loss}, step)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Each training member's epoch: its history row, loggers, checkpoints, early stopping
        and epoch-interval schedule; then the files, and the group's checkpoint."""
        train = pl_module.epoch_metrics("train")
        val = pl_module.results.get("val") or [{} for _ in self.members]
        elapsed = pl_module.clock.elapsed()
        epoch = trainer.current_epoch
        # Lightning logs epoch metrics at the epoch's last step (its batches so far, minus 1).
        step = trainer.fit_loop.epoch_loop._batches_that_stepped - 1
        for member, outputs in list(self._training()):
            metrics = {**train[member.index], **val[member.index]}
            row = {"epoch": epoch, "lr": self.epoch_lrs[member.index]}
            row.update({key: metrics.get(key, math.nan) for key in HISTORY_COLUMNS[2:-1]})
            row["elapsed_s"] = round(elapsed, 3)
            self.rows[member.index].append(row)
            self._log(outputs, {**metrics, "epoch": epoch}, step)
            self._save_checkpoints(pl_module, member, outputs, metrics, epoch)
            member.end_epoch(metrics, elapsed)
            assert member.schedule is not None
            member.schedule.step("epoch", metrics)
        self._next_epoch_lrs()
        if not any(m.training for m in self.members):
            trainer.should_stop = True
        self.write()
        trainer.save_checkpoint(self.group_checkpoint, weights_only=True)

    def _save_checkpoints(
        self,
        pl_module: pl.LightningModule,
        member: Member,
        outputs: MemberOutputs,
        metrics: dict[str, float],
        epoch: int,
    ) -> None:
        """Each of the member's ``ModelCheckpoint`` files, as its settings say: ``save_last``'s
        file, and its own when its monitored metric improved (every epoch when it monitors
        none); each holds the standalone model's state dict."""
        values = {key: torch.tensor(value) for key, value in metrics.items()}
        content = {
            "state_dict": pl_module.member_state_dict(member.index),
            "epoch": epoch,
            "global_step": member.steps,
            FUSED_CHECKPOINT_KEY: {"member": member.index},
        }
        for number, callback in enumerate(outputs.checkpoints):
            if callback.save_last:
                last = callback.format_checkpoint_name(values, callback.CHECKPOINT_NAME_LAST)
                _save(content, Path(last))
            improved = self._improved(member.index, number, callback, metrics)
            if callback.save_top_k == 1 and improved:
                _save(content, Path(callback.format_checkpoint_name(values)))

    def _improved(
        self, index: int, number: int, callback: ModelCheckpoint, metrics: dict[str, float]
    ) -> bool:
        """Whether checkpoint callback ``number``'s monitored metric beats member ``index``'s
        best so far (then it becomes it); always, when it monitors none."""
        if callback.monitor is None:
            return True
        value = metrics.get(callback.monitor, math.nan)
        best = self.best[index][number]
        better = best is None or (value > best if callback.mode == "max" else value < best)
        if math.isfinite(value) and better:
            self.best[index][number] = value
            return True
        return False


def _save(content: dict[str, Any], path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(content, tmp))
