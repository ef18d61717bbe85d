"""A test callback that plays a GPU too small for a fused group: out of memory when the group
has more than ``members`` members."""

import pytorch_lightning as pl
import torch


class OutOfMemoryAbove(pl.Callback):
    """Raise torch's out-of-memory error at the first training batch of a fused group larger
    than ``members`` (the error a CUDA allocation raises)."""

    def __init__(self, members: int) -> None:
        self.members = members

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args):
        """Fail as an allocation of the first step would."""
        if len(pl_module.members) > self.members:
            raise torch.OutOfMemoryError(f"test: no memory for {len(pl_module.members)} members")
