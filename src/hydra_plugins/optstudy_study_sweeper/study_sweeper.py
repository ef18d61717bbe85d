"""A Hydra sweeper that expands a tuned study (``conf/study/<name>.yaml``'s ``study`` block)
into the runs of one phase and launches them all at once through the configured launcher
(with ``launcher=grouped``, the runs of each configuration and task train as one group)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from optstudy.cli import guarded
from optstudy.errors import ConfigError
from optstudy.study.protocol import (
    Job,
    defaults_jobs,
    final_jobs,
    load_protocol,
    restrict,
    tuning_jobs,
)

log = logging.getLogger(__name__)
PHASES = ("tune", "final")


class StudySweeper(Sweeper):
    """Launch the runs of one phase of a tuned study."""

    def __init__(
        self,
        phase: str = "tune",
        optimizers: Sequence[str] = (),
        schedulers: Sequence[str] = (),
        selected: str = "",
    ) -> None:
        self.phase = phase
        self.optimizers = list(optimizers)
        self.schedulers = list(schedulers)
        self.selected = selected
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Set up the launcher the jobs go to."""
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def _search_space(self, arguments: list[str], optimizer: str) -> dict[str, Any]:
        """The search space of ``optimizer`` from its config (``optimizer.search_space``), as
        a run of this sweep composes it."""
        assert self.hydra_context is not None and self.config is not None
        cfg = self.hydra_context.config_loader.load_sweep_config(
            self.config, [*arguments, f"optimizer={optimizer}"]
        )
        space = OmegaConf.select(cfg, "optimizer.search_space")
        if not space:
            raise ConfigError(
                f"conf/optimizer/{optimizer}.yaml has no search_space: the tuned study needs "
                "one (e.g. search_space: {lr: {low: 1.0e-4, high: 1.0, log: true}})"
            )
        return OmegaConf.to_container(space, resolve=True)

    def jobs(self, arguments: list[str]) -> list[Job]:
        """The runs of the phase, in a fixed order (``arguments``: the command line's task
        overrides)."""
        assert self.config is not None
        if self.phase not in PHASES:
            raise ConfigError(
                f"hydra.sweeper.phase={self.phase} is invalid: must be one of {', '.join(PHASES)}"
            )
        if OmegaConf.select(self.config, "study") is None:
            raise ConfigError("hydra/sweeper=study needs a study: add study=<name>")
        protocol = restrict(load_protocol(self.config.study), self.optimizers, self.schedulers)
        if self.phase == "final":
            # Here, not at the top: Hydra imports every plugin for every command, and the
            # selection module brings pandas.
            from optstudy.study.select import read_selected

            return list(final_jobs(protocol, read_selected(Path(self.selected))))
        spaces = {name: self._search_space(arguments, name) for name in protocol.optimizers}
        return [*tuning_jobs(protocol, spaces), *defaults_jobs(protocol)]

    def sweep(self, arguments: list[str]) -> Any:
        """Launch every run of the phase; the command line's own overrides go to every run
        (before the study's, which win)."""
        assert self.config is not None and self.launcher is not None
        jobs = guarded(lambda: self.jobs(arguments))
        parsed = OverridesParser.create().parse_overrides(arguments)
        swept = [o.input_line for o in parsed if o.is_sweep_override()]
        if swept:
            guarded(lambda: _no_sweeps(swept))
        log.info("study %s, phase %s: %d runs", self.config.study.name, self.phase, len(jobs))
        overrides = [[*arguments, *job.overrides()] for job in jobs]
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        return self.launcher.launch(overrides, initial_job_idx=0)


def _no_sweeps(swept: list[str]) -> None:
    raise ConfigError(
        f"{' '.join(swept)}: a tuned study sweeps what its study block says; change the study "
        "file (study.tasks, study.optimizers, ...) instead of sweeping on the command line"
    )
