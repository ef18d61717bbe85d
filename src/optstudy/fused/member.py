"""One member of a fused group: its run (config, directory) and its training state apart from
the weights: lr schedule, random stream, divergence and early stopping, whether it trains on."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import EarlyStopping

from optstudy.artifacts import COMPLETED, DIVERGED
from optstudy.fused.noise import MemberRng
from optstudy.fused.schedule import MemberSchedule
from optstudy.module.classifier import diverges

log = logging.getLogger(__name__)

TRAINING, STOPPED = "training", "stopped"  # and DIVERGED


@dataclass(frozen=True)
class MemberRun:
    """What a member trains: its resolved run config, its run directory and the config-group
    choices Hydra made for it."""

    cfg: DictConfig
    out_dir: Path
    choices: Mapping[str, str | None] = field(default_factory=dict)


class Member:
    """The training state of member ``index`` beyond its weights.

    A member trains until it diverges (a non-finite loss, or one above ``divergence_factor`` ×
    its first loss: its step is dropped and it is frozen) or its early stopping says stop (it
    is frozen after that epoch); the others go on. ``schedule`` is set once the run knows its
    number of steps."""

    def __init__(
        self,
        index: int,
        run: MemberRun,
        rng: MemberRng,
        early_stopping: EarlyStopping | None,
        divergence_factor: float | None,
    ) -> None:
        self.index = index
        self.run = run
        self.rng = rng
        self.early_stopping = early_stopping
        self.divergence_factor = divergence_factor
        self.schedule: MemberSchedule | None = None
        self.status = TRAINING
        self.initial_loss: float | None = None
        self.steps = 0  # optimizer steps taken
        self.stopped_at: float | None = None  # training seconds when it stopped

    @property
    def training(self) -> bool:
        """Whether the member still trains."""
        return self.status == TRAINING

    @property
    def final_status(self) -> str:
        """What its metrics.json says: diverged, or completed (early stopping included)."""
        return DIVERGED if self.status == DIVERGED else COMPLETED

    def check_loss(self, value: float, elapsed: float) -> None:
        """Take this step's training loss; a diverging one freezes the member."""
        if self.initial_loss is None:
            self.initial_loss = value
        if diverges(value, self.initial_loss, self.divergence_factor):
            log.info("member %d (%s) diverged at step %d", self.index, self.run.out_dir, self.steps)
            self.stop(DIVERGED, elapsed)

    def end_epoch(self, metrics: Mapping[str, float], elapsed: float) -> None:
        """After an epoch (its validation included): early stopping on the member's metric."""
        if self.early_stopping is None or not self.training:
            return
        value = torch.tensor(metrics[self.early_stopping.monitor])
        stop, reason = self.early_stopping._evaluate_stopping_criteria(value)
        if stop:
            log.info("member %d (%s): early stopping: %s", self.index, self.run.out_dir, reason)
            self.stop(STOPPED, elapsed)

    def stop(self, status: str, elapsed: float) -> None:
        """Freeze the member with ``status``."""
        self.status = status
        self.stopped_at = elapsed

    def state_dict(self) -> dict[str, Any]:
        """Everything above, for the group's checkpoints."""
        assert self.schedule is not None
        return {
            "status": self.status,
            "initial_loss": self.initial_loss,
            "steps": self.steps,
            "stopped_at": self.stopped_at,
            "rng": self.rng.state_dict(),
            "schedule": self.schedule.state_dict(),
            "early_stopping": self.early_stopping.state_dict() if self.early_stopping else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a checkpoint's state (the schedule must be built)."""
        assert self.schedule is not None
        self.status = state["status"]
        self.initial_loss = state["initial_loss"]
        self.steps = state["steps"]
        self.stopped_at = state["stopped_at"]
        self.rng.load_state_dict(state["rng"])
        self.schedule.load_state_dict(state["schedule"])
        if self.early_stopping is not None:
            self.early_stopping.load_state_dict(state["early_stopping"])
