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

from optstudy.errors import ConfigError
from optstudy.grouping import MODES, GroupInfo, Progress, describe, in_group, plan_groups

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
            for member, index in enumerate(group.jobs):
                info = GroupInfo(group.id, len(group.jobs), "sequential", member)
                overrides = " ".join(filter_overrides(job_overrides[index]))
                log.info(
                    "\t#%d (group %d, member %d): %s", numbers[index], group.id, member, overrides
                )
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
        return [results[i] for i in range(len(job_overrides))]
