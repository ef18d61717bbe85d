"""A test callback that sends the real SIGTERM to its own process at a chosen training step."""

import os
import signal

import pytorch_lightning as pl


class SigtermAt(pl.Callback):
    """Send SIGTERM to this process at global step ``step`` (unless resumed past it)."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.armed = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Disarm in a resumed run that already got past the step."""
        self.armed = trainer.global_step < self.step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        """Signal once the step is reached."""
        if self.armed and trainer.global_step == self.step:
            self.armed = False
            os.kill(os.getpid(), signal.SIGTERM)
