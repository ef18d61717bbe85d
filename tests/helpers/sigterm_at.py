"""Test callbacks that interrupt a run from inside: the real SIGTERM or SIGINT, or a crash, at a
chosen training step, optionally only in the run of one seed (one member of a group) or one
sweep job."""

import os
import signal

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig


class SigtermAt(pl.Callback):
    """Send SIGTERM to this process at global step ``step`` (unless resumed past it); with
    ``seed``, only in the run seeded with it; with ``job``, only in the sweep job of that number
    (``hydra.job.num``: an Optuna trial's number)."""

    def __init__(self, step: int, seed: int | None = None, job: int | None = None) -> None:
        self.step = step
        self.seed = seed
        self.job = job
        self.armed = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Disarm in a resumed run that already got past the step, or in another run."""
        ours = self.seed is None or torch.initial_seed() == self.seed
        ours = ours and (self.job is None or HydraConfig.get().job.num == self.job)
        self.armed = ours and trainer.global_step < self.step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        """Signal once the step is reached."""
        if self.armed and trainer.global_step == self.step:
            self.armed = False
            self.interrupt()

    def interrupt(self) -> None:
        """What happens at the step: SIGTERM."""
        os.kill(os.getpid(), signal.SIGTERM)


class SigintAt(SigtermAt):
    """Send SIGINT (what Ctrl-C sends) to this process at global step ``step``."""

    def interrupt(self) -> None:
        """What happens at the step: SIGINT."""
        os.kill(os.getpid(), signal.SIGINT)


class FailAt(SigtermAt):
    """Crash the run (a RuntimeError, as a bug would) at global step ``step``."""

    def interrupt(self) -> None:
        """What happens at the step: an unexpected error."""
        raise RuntimeError(f"FailAt: planned crash at step {self.step}")
