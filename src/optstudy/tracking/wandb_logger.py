"""Lightning's WandbLogger, started so that training never waits for or fails on W&B."""

from __future__ import annotations

import logging
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from optstudy.quiet import drop_removed_wandb_arguments
from optstudy.tracking.wandb_mode import choose_mode

log = logging.getLogger(__name__)


def _started(logger: WandbLogger, reason: str) -> WandbLogger:
    """Start the logger's run now, so that a failure to start shows here rather than at the
    first logged value, and say in one line where it went (rank zero only: the other ranks
    get Lightning's dummy run)."""
    run = logger.experiment
    if rank_zero_only.rank != 0:
        return logger
    if run.offline:
        log.info("W&B: offline (%s); sync later with: wandb sync %s", reason, run.sync_dir)
    elif run.url:
        log.info("W&B: syncing to %s", run.url)
    return logger


def build_wandb_logger(
    save_dir: str | Path,
    name: str,
    job_type: str,
    group: str | None = None,
    tags: Sequence[str | None] = (),
    project: str = "optstudy",
    offline: bool = False,
    init_timeout: float = 10.0,
    finish_timeout: float = 60.0,
) -> WandbLogger:
    """A started :class:`WandbLogger` writing under ``save_dir``/wandb.

    ``group`` defaults to the name of ``save_dir``'s parent folder: a sweep's folder (the study)
    for a sweep job. The run is online only when an API key is configured and neither
    ``offline`` nor ``WANDB_MODE`` says otherwise; if the server cannot be reached within
    ``init_timeout`` seconds it goes offline instead. Either way one log line says where the
    run went. ``finish_timeout`` bounds the wait for uploads when the run finishes.
    """
    import wandb

    def start(mode: str, reason: str, run_id: str | None = None) -> WandbLogger:
        # A fresh Settings per attempt: wandb.init writes the run's id into the one it gets.
        settings = wandb.Settings(
            silent=True, init_timeout=init_timeout, finish_timeout=finish_timeout
        )
        logger = WandbLogger(mode=mode, id=run_id, settings=settings, **run_args)
        drop_removed_wandb_arguments(logger._wandb_init)
        return _started(logger, reason)

    run_args: dict[str, Any] = {
        "save_dir": str(save_dir),
        "project": project,
        "group": group or Path(save_dir).resolve().parent.name,
        "job_type": job_type,
        "name": name,
        "tags": [tag for tag in tags if tag is not None],
    }
    mode, reason = choose_mode(offline)
    if mode == "online":
        attempt_id = secrets.token_hex(4)  # chosen here to find the attempt's folder if it fails
        try:
            return start(mode, reason, attempt_id)
        except wandb.errors.Error as exc:
            first_line = str(exc).partition("\n")[0]
            mode, reason = "offline", f"online start failed: {first_line}"
            # `wandb sync --sync-all` would otherwise upload the failed attempt as an empty run.
            for attempt in Path(save_dir, "wandb").glob(f"run-*-{attempt_id}"):
                shutil.rmtree(attempt)
    return start(mode, reason)
