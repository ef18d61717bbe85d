"""Callbacks the benchmarks add to a run through its config (``+callbacks.<name>._target_``,
or ``+hydra.callbacks.<name>._target_`` for a job callback)."""

from __future__ import annotations

import gc
import json
import resource
import time
from pathlib import Path
from typing import Any

import psutil
import pytorch_lightning as pl
import torch
from hydra.experimental.callback import Callback as HydraCallback


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so a clock read means the work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(pl.Callback):
    """Clock the training steps ``warmup`` .. ``last`` of the first epoch, from the start of
    step ``warmup`` to the end of step ``last`` (everything the trainer does in between), and
    write the seconds to ``path`` as JSON."""

    def __init__(self, path: str, warmup: int, last: int) -> None:
        self.path = Path(path)
        self.warmup, self.last = warmup, last
        self.start = float("nan")

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Start the clock at step ``warmup``."""
        if batch_idx == self.warmup and trainer.current_epoch == 0:
            sync(pl_module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Stop the clock at step ``last``."""
        if batch_idx == self.last and trainer.current_epoch == 0:
            sync(pl_module.device)
            seconds = time.perf_counter() - self.start
            self.path.write_text(json.dumps({"seconds": seconds}))


class FirstStepStamp(pl.Callback):
    """Write the wall-clock time (``time.time()``) at which the first training step starts to
    ``path`` as JSON, for a parent process that noted when it launched the run."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Stamp the first step."""
        if trainer.global_step == 0 and batch_idx == 0:
            self.path.write_text(json.dumps({"first_step": time.time()}))


class RecordRSS(HydraCallback):
    """Hydra job callback: append the process's resident set size in bytes, after a garbage
    collection, to ``path`` at the end of each job (each member of a group)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_job_end(self, config: Any, **kwargs: Any) -> None:
        """After a job."""
        gc.collect()
        with self.path.open("a") as f:
            f.write(f"{psutil.Process().memory_info().rss}\n")


class RecordPeakMemory(HydraCallback):
    """Hydra job callback: write the process's peak resident set (and, on a GPU, the peak GPU
    memory torch held) so far, in MiB, as JSON to the file ``name`` in the job's run
    directory at the end of each job."""

    def __init__(self, name: str = "memory.json") -> None:
        self.name = name

    def on_job_end(self, config: Any, **kwargs: Any) -> None:
        """After a job."""
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
        path = Path(config.hydra.runtime.output_dir) / self.name
        path.write_text(json.dumps({"rss_mb": round(rss, 1), "gpu_mb": gpu}))
