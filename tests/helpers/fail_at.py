"""A test callback that makes a run crash at a chosen training step, as a bug would."""

import pytorch_lightning as pl


class FailAt(pl.Callback):
    """Raise a RuntimeError once global step ``step`` is reached."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        """Fail at the step."""
        if trainer.global_step == self.step:
            raise RuntimeError(f"failing on purpose at step {self.step}")
