"""Close a job's W&B run, so that every job of a sweep gets its own run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from optstudy.artifacts import read_metrics


class FinishWandbRun(Callback):
    """Hydra callback: after each job (completed or failed) with a W&B run, put the job's
    ``metrics.json`` into the run's summary and finish the run. Without it, the next job of a
    sweep would log into this job's run. A job without ``metrics.json`` did not finish and its
    run is marked failed (exit code 1)."""

    def on_job_end(self, config: DictConfig, **kwargs: Any) -> None:
        """After a job."""
        wandb = sys.modules.get("wandb")  # imported only by jobs with logger=wandb
        if wandb is None or wandb.run is None:
            return
        metrics = read_metrics(Path(config.hydra.runtime.output_dir))
        if metrics is not None:
            wandb.run.summary.update(metrics)
        wandb.run.finish(exit_code=0 if metrics is not None else 1)
