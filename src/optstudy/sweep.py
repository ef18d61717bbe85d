"""How one job of a Hydra sweep ends: the value a sweeper optimises, or a failure the sweep
survives (the job leaves no metrics.json, so a study report lists it as incomplete)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from optstudy.cli import error_line, expected_error

log = logging.getLogger(__name__)

# What a run that diverged scores: the worst accuracy, finite so Optuna learns from it.
DIVERGED_OBJECTIVE = 0.0


def objective(metrics: Mapping[str, Any]) -> float:
    """The run's ``best_val_acc`` (higher is better), or :data:`DIVERGED_OBJECTIVE` when it
    diverged or never finished an epoch."""
    best = metrics.get("best_val_acc")
    if metrics.get("status") == "diverged" or best is None:
        return DIVERGED_OBJECTIVE
    return float(best)


def report_failed_job(exc: BaseException, job_dir: Path) -> None:
    """Say in one line on stderr that the job in ``job_dir`` failed, and log it into the job's
    log file (with the traceback when the error is not a user error)."""
    user_error = expected_error(exc)
    message = error_line(user_error) if user_error else f"{type(exc).__name__}: {exc}"
    print(f"error: job {job_dir} failed, the sweep goes on: {message}", file=sys.stderr)
    log.error("job failed: %s", message, exc_info=user_error is None)
