"""A Hydra sweeper that searches with a current Optuna through its ask-and-tell interface.

Each round asks ``n_jobs`` trials, launches their jobs as one batch through the configured
launcher (with ``launcher=grouped``: one group), and tells the study what each job returned
(:func:`optstudy.sweep.objective`; a failed job's trial is FAIL and the search goes on). The
search itself is :class:`optstudy.tuning.Search`; this module is its Hydra side. Optuna is
imported only when a search starts, so that every other command starts without it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, configure_log
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from optstudy.errors import ConfigError

if TYPE_CHECKING:
    from optstudy.tuning import Outcome, Search, SearchSpace

log = logging.getLogger(__name__)

# The sweep directory's file with the study's summary and best trial.
RESULTS_FILE = "optimization_results.yaml"


def outcome(ret: JobReturn) -> Outcome:
    """What a trial's job ended with: its return value (None when the task returned nothing
    or raised; with ``OPTSTUDY_DEBUG`` set, a raised error stops the search) and run
    directory."""
    from optstudy.cli import debugging

    run_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg else None
    try:
        value = ret.return_value
    except Exception as exc:
        if debugging():
            raise
        log.error("the job in %s failed, the search goes on: %s", run_dir, exc)
        return None, run_dir
    return (None if value is None else float(value)), run_dir


class OptunaAskTellSweeper(Sweeper):
    """Search with Optuna, a batch of trials at a time (see the module docstring)."""

    def __init__(
        self,
        direction: str = "maximize",
        study_name: str = "optstudy",
        storage: str | None = None,
        n_trials: int = 20,
        n_jobs: int = 1,
        sampler: str = "tpe",
        seed: int | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.direction = direction
        self.study_name = study_name
        self.storage = storage
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.sampler = sampler
        self.seed = seed
        self.params = params or {}
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Launcher | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Keep the config and build the configured launcher."""
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        """Bring the study to ``n_trials`` finished trials, then write its summary into the
        sweep directory. A bad setting ends the command with one ``error:`` line."""
        from optstudy.cli import guarded

        assert self.config is not None
        search = guarded(lambda: self._search(arguments))
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        search.run(self.n_trials, self.n_jobs)
        summary = search.summary()
        OmegaConf.save(OmegaConf.create(summary), sweep_dir / RESULTS_FILE)
        log.info(
            "study %s: %s; best: trial %s, %s %s",
            summary["study_name"], summary["trials"], summary["best_trial"],
            summary["best_value"], summary["best_params"],
        )  # fmt: skip

    def _check(self) -> None:
        from optstudy.tuning import DIRECTIONS

        if self.direction not in DIRECTIONS:
            raise ConfigError(
                f"hydra.sweeper.direction={self.direction} is invalid: must be "
                f"{' or '.join(DIRECTIONS)}"
            )
        for key in ("n_trials", "n_jobs"):
            if getattr(self, key) < 1:
                raise ConfigError(
                    f"hydra.sweeper.{key}={getattr(self, key)} is invalid: must be >= 1"
                )

    def _search(self, arguments: Sequence[str]) -> Search:
        from optstudy.tuning import Search, make_sampler

        self._check()
        space = self._space(arguments)
        sampler = make_sampler(self.sampler, self.seed)
        return Search(self.study_name, self.storage, sampler, self.direction, space, self._launch)

    def _space(self, arguments: Sequence[str]) -> SearchSpace:
        """``hydra.sweeper.params``, then the command line's overrides (a sweep searches its
        setting, a plain value fixes it); with no params, the optimizer's search_space adds the
        settings the command line leaves open."""
        from optstudy.optim.build import SEARCH_SPACE_KEY
        from optstudy.tuning import SearchSpace

        assert self.hydra_context is not None
        space = SearchSpace()
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        for key, value in self.params.items():
            space.add(str(key), value, parser)
        for override in parser.parse_overrides(list(arguments)):
            space.add_override(override)
        if not self.params:
            ranges = self._optimizer_space(space)
            space.add_defaults(ranges, "optimizer.", f"optimizer.{SEARCH_SPACE_KEY}")
        if not space.distributions:
            raise ConfigError(
                "nothing to search: hydra.sweeper.params is empty and the optimizer config has "
                "no search_space (give one, e.g. optimizer.lr='tag(log, interval(1e-5, 1.0))')"
            )
        return space

    def _optimizer_space(self, space: SearchSpace) -> Mapping[str, Any]:
        """The search_space of the optimizer the fixed overrides choose (empty if it has none)."""
        from optstudy.optim.build import SEARCH_SPACE_KEY

        assert self.hydra_context is not None and self.config is not None
        if "optimizer" in space.distributions:
            raise ConfigError(
                "the optimizer is searched, so hydra.sweeper.params must give the search space "
                f"(optimizer.{SEARCH_SPACE_KEY} belongs to one optimizer)"
            )
        overrides = list(space.fixed.values())
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        ranges = OmegaConf.select(cfg, f"optimizer.{SEARCH_SPACE_KEY}") or {}
        if not isinstance(ranges, Mapping):
            raise ConfigError(
                f"optimizer.{SEARCH_SPACE_KEY}={ranges} is invalid: must map optimizer arguments "
                "to {low: …, high: …, log: true|false}"
            )
        return ranges

    def _launch(self, overrides: list[list[str]], first_number: int) -> list[Outcome]:
        """Run the jobs of consecutive trials as one batch, numbered from ``first_number``."""
        assert self.launcher is not None and self.config is not None
        returns = self.launcher.launch(overrides, initial_job_idx=first_number)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return [outcome(r) for r in returns]
