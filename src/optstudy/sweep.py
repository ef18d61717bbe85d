"""How one job of a Hydra sweep ends (the value a sweeper optimises, or a failure the sweep
survives: the job leaves no metrics.json, so a study report lists it as incomplete), and how
the sweep as a whole starts and ends (:class:`SweepCheck`)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from optstudy.cli import error_line, expected_error, guarded
from optstudy.errors import ConfigError
from optstudy.rundir import check_writable

log = logging.getLogger(__name__)

# What a run that diverged scores: the worst accuracy, finite so Optuna learns from it.
DIVERGED_OBJECTIVE = 0.0
# The folder, in the sweep directory, where a sweep's jobs record whether they failed,
# wherever they run (this process, joblib workers, submitit jobs); removed when the sweep
# ends. Its path goes to the jobs in the environment variable (inherited by every launcher's
# processes).
OUTCOMES_DIR = ".job-outcomes"
OUTCOMES_ENV = "OPTSTUDY_SWEEP_OUTCOMES"
# Exit code of a sweep in which every job failed.
ALL_FAILED_EXIT = 1
# Failed jobs a summary names (the rest are counted).
NAMED_FAILURES = 5


def objective(metrics: Mapping[str, Any]) -> float:
    """The run's ``best_val_acc`` (higher is better), or :data:`DIVERGED_OBJECTIVE` when it
    diverged or never finished an epoch."""
    best = metrics.get("best_val_acc")
    if metrics.get("status") == "diverged" or best is None:
        return DIVERGED_OBJECTIVE
    return float(best)


def _to_log_files(level: int, message: str, exc: BaseException | None) -> None:
    """Log ``message`` (with ``exc``'s traceback, if given) into the job's log files only: the
    console has already had its one line."""
    record = log.makeRecord(
        log.name, level, __file__, 0, message, (),
        (type(exc), exc, exc.__traceback__) if exc else None,
    )  # fmt: skip
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def report_failed_job(exc: BaseException, job_dir: Path) -> None:
    """Say in one line on stderr that the job in ``job_dir`` failed, and log it into the job's
    log file (with the traceback when the error is not a user error)."""
    user_error = expected_error(exc)
    message = error_line(user_error) if user_error else f"{type(exc).__name__}: {exc}"
    print(f"error: job {job_dir} failed, the sweep goes on: {message}", file=sys.stderr)
    _to_log_files(logging.ERROR, f"job failed: {message}", None if user_error else exc)


def _sweep_params(config: DictConfig) -> list[str]:
    params = OmegaConf.select(config, "hydra.sweeper.params")
    return list(params) if isinstance(params, DictConfig) else []


def check_not_a_sweep(config: DictConfig) -> None:
    """Raise :class:`ConfigError` when a single run was started with a sweep's config: a study
    (``python -m optstudy.study run`` runs it) or a search (``hparams_search``, or sweeper
    parameters: only ``-m`` runs them)."""
    choices = config.hydra.runtime.choices
    study = choices.get("study")
    if study:
        raise ConfigError(
            f"study={study} is a study, many runs, not one: run it with "
            f"python -m optstudy.study run study={study} (its runs, then its report)"
        )
    search = choices.get("hparams_search")
    params = _sweep_params(config)
    if not (search or params):
        return
    what = f"hparams_search={search}" if search else f"hydra.sweeper.params ({', '.join(params)})"
    raise ConfigError(
        f"{what} is a search, many runs, not one: add -m to run it "
        f"(python train.py -m {what if search else '...'})"
    )


def check_launcher(config: DictConfig) -> None:
    """Raise :class:`ConfigError` when the sweep's launcher cannot start here: SLURM's needs a
    cluster node (submitit's own test: an ``srun`` command)."""
    target = str(OmegaConf.select(config, "hydra.launcher._target_") or "")
    if not target.endswith(".SlurmLauncher"):
        return
    from submitit.slurm.slurm import SlurmExecutor

    if SlurmExecutor.affinity() <= 0:
        raise ConfigError(
            "launcher=submitit_slurm submits to a SLURM cluster, but this machine has no srun: "
            "start the sweep on the cluster's login node, or run it here with "
            "launcher=submitit_local (the same submitit jobs as local processes) or "
            "launcher=joblib"
        )


def job_failed(job_return: JobReturn) -> bool:
    """Whether a job failed: it raised, or returned nothing (train.py's task function returns
    an objective for every run it finished, diverged ones included)."""
    return job_return.status != JobStatus.COMPLETED or job_return.return_value is None


def sweep_summary(outcomes: list[dict[str, Any]], sweep_dir: str) -> str:
    """One line on how a sweep's jobs ended (``outcomes``: their ``{"dir", "failed"}``
    records) and where to look next."""
    failed = sorted(Path(o["dir"]).name for o in outcomes if o["failed"])
    if not failed:
        return (
            f"sweep finished: {len(outcomes)} runs in {sweep_dir}; compare them with "
            f"python -m optstudy.report {sweep_dir} --out <report folder>"
        )
    names = ", ".join(failed[:NAMED_FAILURES]) + (", …" if len(failed) > NAMED_FAILURES else "")
    total = len(outcomes)
    share = f"{len(failed)} of {total}" if len(failed) < total else f"all {total}"
    return f"error: {share} jobs failed ({names}): see their train.log in {sweep_dir}"


class SweepCheck(Callback):
    """Hydra callback: refuse a sweep's config without ``-m`` and a launcher that cannot start,
    with one line each (exit 2); after a sweep, say how its jobs ended, and exit with
    :data:`ALL_FAILED_EXIT` when every job failed."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Before a single run."""
        guarded(lambda: check_not_a_sweep(config))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Before a sweep: check its launcher, then make the folder its jobs record their
        outcomes in (emptied first: a killed sweep leaves its records behind)."""
        guarded(lambda: check_launcher(config))
        sweep_dir = Path(str(config.hydra.sweep.dir))
        guarded(lambda: check_writable(sweep_dir))
        folder = sweep_dir / OUTCOMES_DIR
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        os.environ[OUTCOMES_ENV] = str(folder.resolve())

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """After a job of a sweep, wherever it ran: record whether it failed."""
        folder = os.environ.get(OUTCOMES_ENV)
        if not folder or not Path(folder).is_dir():
            return
        record = {"dir": str(config.hydra.runtime.output_dir), "failed": job_failed(job_return)}
        Path(folder, f"{config.hydra.job.num}.json").write_text(json.dumps(record))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """After a sweep: one line on how its jobs ended; exit non-zero when all failed."""
        folder = Path(os.environ.pop(OUTCOMES_ENV, ""))
        if not folder.name or not folder.is_dir():
            return
        outcomes = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
        shutil.rmtree(folder, ignore_errors=True)
        if not outcomes:
            return
        summary = sweep_summary(outcomes, str(config.hydra.sweep.dir))
        print(summary, file=sys.stderr if summary.startswith("error:") else sys.stdout)
        if all(o["failed"] for o in outcomes):
            raise SystemExit(ALL_FAILED_EXIT)
