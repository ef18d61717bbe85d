"""A group's jobs trained fused (``launcher.mode=vmap``): every member's job is opened, the
group trains once (:func:`optstudy.fused.group.train_splitting`), every job is closed with its
member's result. A member that fails validation fails alone; a member whose run directory
holds a checkpoint of a run trained on its own resumes it on its own; an error of the fused
training fails every member it trained (the sweep goes on); SIGTERM stops the sweep after the
group's checkpoint is saved (exit code 143), and the same command resumes the group.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.optstudy_grouped_launcher.member_job import (
    MemberJob,
    close_job,
    file_formatter,
    logging_to,
    open_job,
    run_task,
)
from optstudy.grouping import Group, GroupInfo, in_group

log = logging.getLogger(__name__)

# The exit code of a sweep stopped by SIGTERM (as train.py's for one run).
INTERRUPTED_EXIT = 143


def _validated(jobs: dict[int, MemberJob], context: HydraContext) -> tuple[list[int], dict]:
    """The jobs whose configs are valid; the others are closed as failed jobs of the sweep."""
    from optstudy.cli import debugging
    from optstudy.sweep import report_failed_job
    from optstudy.validation import validate

    valid, closed = [], {}
    for index, job in jobs.items():
        try:
            validate(job.resolved)
            valid.append(index)
        except Exception as exc:
            if debugging():
                raise
            report_failed_job(exc, job.output_dir)
            closed[index] = close_job(context, job, None)
    return valid, closed


def run_fused_group(
    context: HydraContext,
    task_function: TaskFunction,
    group: Group,
    configs: Sequence[DictConfig],
    numbers: Sequence[int],
    sweep_dir: Path,
) -> dict[int, JobReturn]:
    """Train the jobs ``group.jobs`` (indices into ``configs``, numbered ``numbers``) as one
    fused group in ``sweep_dir``; return each job's result by index."""
    from optstudy.cli import debugging
    from optstudy.errors import RunInterrupted
    from optstudy.fused.group import own_checkpoint, train_splitting
    from optstudy.fused.member import MemberRun
    from optstudy.sweep import objective, report_failed_job

    jobs = {index: open_job(context, task_function, configs[index]) for index in group.jobs}
    valid, results = _validated(jobs, context)
    runs = {i: MemberRun(jobs[i].resolved, jobs[i].output_dir, jobs[i].choices) for i in valid}
    for index in list(valid):
        if (own := own_checkpoint(runs[index])) is not None:
            log.info("job #%d resumes %s, trained on its own", numbers[index], own)
            info = GroupInfo(group.id, len(group.jobs), "sequential", group.jobs.index(index))
            with in_group(info):
                value = run_task(jobs[index], task_function)
            results[index] = close_job(context, jobs[index], value)
            valid.remove(index)
    if not valid:
        return results
    log.info("group %d: %d members train fused (vmap)", group.id, len(valid))
    files = [path for index in valid for path in jobs[index].log_files]
    try:
        with logging_to(files, file_formatter()):
            metrics = train_splitting([runs[i] for i in valid], sweep_dir, group.id)
        values = [objective(m) for m in metrics]
    except RunInterrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)
    except Exception as exc:
        if debugging():
            raise
        for index in valid:
            report_failed_job(exc, jobs[index].output_dir)
        values = [None] * len(valid)
    for index, value in zip(valid, values, strict=True):
        results[index] = close_job(context, jobs[index], value)
    return results
