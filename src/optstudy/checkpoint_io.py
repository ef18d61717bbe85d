"""Checkpoints written like every other file of a run: beside their destination, then renamed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins import TorchCheckpointIO

from optstudy.atomic import atomic_save


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's :class:`TorchCheckpointIO`, but each checkpoint is written through
    :func:`optstudy.atomic.atomic_save` (Lightning's writes to a temporary file in /tmp and
    moves it, which copies across file systems): a file under a checkpoint's name is always
    complete, whatever stopped its write (a full disk, SIGKILL), and a write that fails for
    lack of space or permission is a :class:`~optstudy.errors.WriteError` naming the file."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Write ``checkpoint`` to the local ``path`` atomically (``storage_options``: unused,
        as in Lightning's)."""
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        atomic_save(Path(path), lambda file: torch.save(checkpoint, file))
