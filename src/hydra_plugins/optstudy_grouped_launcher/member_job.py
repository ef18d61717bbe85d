"""The Hydra job of each member of a fused group, opened before the group trains and closed
after.

Hydra's ``run_job`` runs a job in one call: it sets up the job (output directory, Hydra config,
logging, ``.hydra/`` files, ``on_job_start`` callbacks), calls the task and closes the job (its
``JobReturn``, ``on_job_end`` callbacks). A fused group trains once for all its members, so
:func:`open_job` does the first part for each member and :func:`close_job` the last, with the
steps and Hydra helpers ``run_job`` uses: a member's run directory and job callbacks are those
of the same job under the sequential mode.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import (
    JobReturn,
    JobRuntime,
    JobStatus,
    _flush_loggers,
    _save_config,
    configure_log,
    env_override,
)
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write


@dataclass
class MemberJob:
    """One opened member job: its Hydra job config, its run config (as the task would get it,
    and resolved), its run directory, Hydra's choices and the log files it logs to."""

    config: DictConfig
    task_cfg: DictConfig
    resolved: DictConfig
    output_dir: Path
    choices: dict[str, str | None]
    log_files: list[str] = field(default_factory=list)


@contextmanager
def as_job(config: DictConfig) -> Iterator[None]:
    """Make ``config`` Hydra's current job config inside the block (interpolations such as
    ``${hydra:runtime.output_dir}`` resolve to this job's values)."""
    saved = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(config)
    try:
        yield
    finally:
        HydraConfig.instance().cfg = saved


def open_job(
    hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
) -> MemberJob:
    """Set up a member's job as ``run_job`` does before calling the task: its output
    directory (``hydra.sweep.dir``/``hydra.sweep.subdir``), its ``.hydra/`` files, its log
    file and the ``on_job_start`` callbacks."""
    with as_job(config):
        output_dir = Path(
            str(OmegaConf.select(config, "hydra.sweep.dir")),
            str(OmegaConf.select(config, "hydra.sweep.subdir")),
        ).absolute()
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = str(output_dir)
        HydraConfig.instance().set_config(config)
        task_cfg = copy.deepcopy(config)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        output_dir.mkdir(parents=True, exist_ok=True)
        configure_log(config.hydra.job_logging, config.hydra.verbose)
        log_files = [
            h.baseFilename
            for h in logging.getLogger().handlers
            if isinstance(h, logging.FileHandler)
        ]
        if config.hydra.output_subdir is not None:
            hydra_output = output_dir / str(config.hydra.output_subdir)
            _save_config(task_cfg, "config.yaml", hydra_output)
            _save_config(copy.deepcopy(HydraConfig.instance().cfg), "hydra.yaml", hydra_output)
            _save_config(config.hydra.overrides.task, "overrides.yaml", hydra_output)
        resolved = OmegaConf.create(OmegaConf.to_container(task_cfg, resolve=True))
        with env_override(config.hydra.job.env_set):
            hydra_context.callbacks.on_job_start(config=config, task_function=task_function)
        choices = dict(config.hydra.runtime.choices)
    return MemberJob(config, task_cfg, resolved, output_dir, choices, log_files)


def run_task(job: MemberJob, task_function: TaskFunction) -> Any:
    """Call the task on an opened job's config, in its Hydra context and logging, as
    ``run_job`` would (for a member the group does not train)."""
    with as_job(job.config):
        configure_log(job.config.hydra.job_logging, job.config.hydra.verbose)
        with env_override(job.config.hydra.job.env_set):
            return task_function(job.task_cfg)


def close_job(
    hydra_context: HydraContext, job: MemberJob, value: Any, failed: bool = False
) -> JobReturn:
    """Close a member's job as ``run_job`` does after the task: its ``JobReturn`` (``value``,
    the task's return value or, ``failed``, its exception) and the ``on_job_end``
    callbacks."""
    with as_job(job.config):
        ret = JobReturn()
        ret.cfg = job.task_cfg
        ret.hydra_cfg = copy.deepcopy(HydraConfig.instance().cfg)
        ret.overrides = OmegaConf.to_container(job.config.hydra.overrides.task)
        ret.working_dir = os.getcwd()
        ret.return_value = value
        ret.status = JobStatus.FAILED if failed else JobStatus.COMPLETED
        ret.task_name = JobRuntime.instance().get("name")
        _flush_loggers()
        hydra_context.callbacks.on_job_end(config=job.config, job_return=ret)
    return ret


@contextmanager
def logging_to(files: list[str], formatter: logging.Formatter | None) -> Iterator[None]:
    """Log to every file of ``files`` inside the block too (the members' job logs, while the
    group trains), besides the handlers already there."""
    root = logging.getLogger()
    present = {getattr(h, "baseFilename", None) for h in root.handlers}
    added = []
    for path in files:
        if path not in present:
            handler = logging.FileHandler(path)
            handler.setFormatter(formatter)
            root.addHandler(handler)
            added.append(handler)
    try:
        yield
    finally:
        for handler in added:
            root.removeHandler(handler)
            handler.close()


def file_formatter() -> logging.Formatter | None:
    """The formatter of the job log file handler now configured."""
    return next(
        (h.formatter for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)),
        None,
    )
