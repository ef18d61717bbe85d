"""A Hydra launcher that trains a sweep's jobs in groups, in this process.

The jobs are planned into groups (:func:`optstudy.grouping.plan_groups`); each member runs as
Hydra's own launcher would run it (its run directory, its ``.hydra`` files, the job callbacks),
marked with its group, so its run directory is the one it would have written alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from hydra_plugins.optstudy_grouped_launcher.fused_jobs import run_fused_group
from optstudy.errors import ConfigError
from optstudy.grouping import MODES, Group, GroupInfo, Progress, describe, in_group, plan_groups

log = logging.getLogger(__name__)


class GroupedLauncher(Launcher):
    """Run a sweep's jobs group by group (see :mod:`optstudy.grouping`)."""

    def __init__(self, mode: str = "auto", max_members: int | None = None) -> None:
        super().__init__()
        self.mode = mode
        self.max_members = max_members
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Keep what :meth:`launch` needs."""
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def _check(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(
                f"hydra.launcher.mode={self.mode} is invalid: must be one of {', '.join(MODES)}"
            )
        size = self.max_members
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ConfigError(
                f"hydra.launcher.max_members={size} is invalid: must be an integer >= 1 or null"
            )

    def _job_config(self, overrides: Sequence[str], number: int) -> DictConfig:
        assert self.hydra_context is not None and self.config is not None
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config):
            config.hydra.job.id = number
            config.hydra.job.num = number
        return config

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Plan the jobs into groups, then train group after group; return the jobs' results
        in job order."""
        from optstudy.cli import guarded

        guarded(self._check)
        assert self.config is not None and self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        numbers = [initial_job_idx + i for i in range(len(job_overrides))]
        configs = [self._job_config(o, n) for o, n in zip(job_overrides, numbers, strict=True)]
        groups = plan_groups(configs, self.max_members)
        for line in describe(groups, configs, numbers):
            log.info(line)
        results: dict[int, JobReturn] = {}
        progress = Progress(len(configs), OmegaConf.select(configs[0], "study.phase"))
        for group in groups:
            members = [configs[i] for i in group.jobs]
            for member, index in enumerate(group.jobs):
                overrides = " ".join(filter_overrides(job_overrides[index]))
                log.info(
                    "\t#%d (group %d, member %d): %s", numbers[index], group.id, member, overrides
                )
            if self._mode(group, members) == "vmap":
                sweep_dir = Path(str(self.config.hydra.sweep.dir))
                results.update(
                    run_fused_group(
                        self.hydra_context, self.task_function, group, configs, numbers, sweep_dir
                    )
                )
                configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
                log.info(progress.done(len(group.jobs)))
            else:
                results.update(self._sequential(group, configs, progress))
        return [results[i] for i in range(len(job_overrides))]

    def _mode(self, group: Group, members: list[DictConfig]) -> str:
        """How ``group`` trains: sequential when asked, when ``auto`` finds no GPU (fused
        training is slower on a CPU), or when its jobs cannot train fused (the log says why);
        else vmap."""
        if self.mode == "sequential" or (self.mode == "auto" and not _on_gpu(members[0])):
            return "sequential"
        from optstudy.fused.fusable import why_not_fused

        if reason := why_not_fused(members):
            log.info("group %d trains sequentially: %s", group.id, reason)
            return "sequential"
        return "vmap"

    def _sequential(
        self, group: Group, configs: list[DictConfig], progress: Progress
    ) -> dict[int, JobReturn]:
        """Run the group's jobs one after another, each as Hydra's own launcher runs a job,
        logging the sweep's ``progress`` after each."""
        results = {}
        for member, index in enumerate(group.jobs):
            info = GroupInfo(group.id, len(group.jobs), "sequential", member)
            with in_group(info):
                results[index] = run_job(
                    hydra_context=self.hydra_context,
                    task_function=self.task_function,
                    config=configs[index],
                    job_dir_key="hydra.sweep.dir",
                    job_subdir_key="hydra.sweep.subdir",
                )
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            log.info(progress.done())
        return results


def _on_gpu(config: DictConfig) -> bool:
    """Whether a job with ``config`` trains on a GPU (its trainer may pick one, and one is
    there)."""
    if str(config.trainer.get("accelerator", "auto")) not in ("auto", "gpu", "cuda"):
        return False
    import torch

    return torch.cuda.is_available()
