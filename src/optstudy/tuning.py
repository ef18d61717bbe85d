"""An Optuna search over a sweep's settings, apart from Hydra: the search space, the sampler, the
study, and the ask → launch → tell loop that brings a study to its number of trials.

Each trial is one job of the sweep and its job number is its trial number, so its run directory
is ``<sweep dir>/<trial number>-<optimizer>-<scheduler>-s<seed>/`` and the trial's user
attribute :data:`RUN_DIR_ATTR` names it. The study (its storage) is the record of the search: a
search started again on the same storage continues the study.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.samplers import BaseSampler, QMCSampler, RandomSampler, TPESampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, Trial, TrialState

from optstudy.errors import ConfigError

log = logging.getLogger(__name__)

DIRECTIONS = ("maximize", "minimize")
# The samplers by name, each seeded. TPE's constant liar scores the trials still running as the
# worst so far, so that the trials of one batch spread out; qmc: a scrambled Sobol sequence.
SAMPLERS: dict[str, Callable[[int | None], BaseSampler]] = {
    "tpe": lambda seed: TPESampler(seed=seed, constant_liar=True),
    "random": lambda seed: RandomSampler(seed=seed),
    "qmc": lambda seed: QMCSampler(seed=seed, scramble=True),
}
# A range of values: {low, high, log} (log: sampled log-uniformly; false if left out).
RANGE_KEYS = ("low", "high", "log")
# The user attribute of a trial that names its run directory (optuna-dashboard shows it).
RUN_DIR_ATTR = "run_dir"
# Trial states that count towards a study's number of trials.
FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)

# What a trial's job ended with: its objective (None: the job failed) and its run directory.
Outcome = tuple[float | None, str | None]
# Runs the jobs of consecutive trials: (each trial's overrides, the first trial's number) → their
# outcomes, in order.
Launch = Callable[[list[list[str]], int], list[Outcome]]


def value_range(key: str, spec: Any) -> FloatDistribution:
    """The range ``spec`` (``{low, high, log}``) of the setting ``key`` as a float distribution;
    :class:`ConfigError` naming ``key`` when it is not a valid range."""
    shape = isinstance(spec, Mapping) and {"low", "high"} <= set(spec) <= set(RANGE_KEYS)
    if not shape or not isinstance(spec.get("log", False), bool):
        raise ConfigError(f"{key}={spec} is invalid: must be {{low: …, high: …, log: true|false}}")
    log_scale = spec.get("log", False)
    try:
        return FloatDistribution(float(spec["low"]), float(spec["high"]), log=log_scale)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}={spec} is invalid: {exc}") from exc


def override_distribution(override: Override) -> BaseDistribution:
    """The distribution a sweep override searches: ``choice(...)``, ``a,b`` or ``range(...)``
    (categorical), ``interval(low, high)`` (uniform) or ``tag(log, interval(low, high))``."""
    if override.is_discrete_sweep():
        return CategoricalDistribution(list(override.sweep_string_iterator()))
    value = override.value()
    assert isinstance(value, IntervalSweep)  # the one sweep that is not discrete
    spec = {"low": value.start, "high": value.end, "log": "log" in value.tags}
    return value_range(override.get_key_element(), spec)


@dataclass
class SearchSpace:
    """What the trials' jobs get: a sampled value of each of ``distributions``, and the
    ``fixed`` overrides (setting → its override) every job gets."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)

    def add_override(self, override: Override) -> None:
        """A sweep override searches its setting, another one fixes it; either replaces what
        was there for that setting."""
        key = override.get_key_element()
        self.distributions.pop(key, None)
        self.fixed.pop(key, None)
        if override.is_sweep_override():
            self.distributions[key] = override_distribution(override)
        else:
            self.fixed[key] = f"{key}={override.get_value_element_as_str()}"

    def add(self, key: str, value: Any, parser: OverridesParser) -> None:
        """A ``hydra.sweeper.params`` entry: a range ``{low, high, log}``, or a value in Hydra's
        override syntax (``tag(log, interval(1e-5, 1.0))``, ``choice(a, b)``, a plain value)
        that ``parser`` reads."""
        if isinstance(value, Mapping):
            self.fixed.pop(key, None)
            self.distributions[key] = value_range(key, value)
        else:
            self.add_override(parser.parse_override(f"{key}={value}"))

    def add_defaults(self, ranges: Mapping[str, Any], prefix: str, source: str) -> None:
        """Search ``<prefix><name>`` in each range of ``ranges`` (name → ``{low, high, log}``,
        the config key ``source``) unless that setting is already searched or fixed."""
        for name, spec in ranges.items():
            key = f"{prefix}{name}"
            if key not in self.distributions and key not in self.fixed:
                self.distributions[key] = value_range(f"{source}.{name}", spec)

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """The job overrides of a trial with the sampled ``params``."""
        return [*self.fixed.values(), *(f"{key}={value}" for key, value in params.items())]


def make_sampler(name: str, seed: int | None) -> BaseSampler:
    """The sampler called ``name`` (one of :data:`SAMPLERS`), seeded with ``seed``."""
    if name not in SAMPLERS:
        raise ConfigError(
            f"hydra.sweeper.sampler={name} is invalid: must be one of {', '.join(SAMPLERS)}"
        )
    with warnings.catch_warnings():
        # Optuna marks QMCSampler experimental; it is used here as its documentation shows.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SAMPLERS[name](seed)


def quiet_libraries() -> None:
    """Alembic (Optuna's database schema migrations) logs every plugin it sets up at INFO when
    imported: keep its warnings only. Optuna logs through the sweep's own log handlers (one
    format, one place)."""
    logging.getLogger("alembic").setLevel(logging.WARNING)
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()


def _consecutive(trials: Sequence[Trial | FrozenTrial]) -> Iterator[list[Trial | FrozenTrial]]:
    """``trials`` in runs of consecutive trial numbers."""
    run: list[Trial | FrozenTrial] = []
    for trial in sorted(trials, key=lambda t: t.number):
        if run and trial.number != run[-1].number + 1:
            yield run
            run = []
        run.append(trial)
    if run:
        yield run


class Search:
    """An Optuna study whose trials are the jobs of a sweep: ask a batch of trials, launch
    their jobs as one batch, tell the study each job's outcome."""

    def __init__(
        self,
        study_name: str,
        storage: str | None,
        sampler: BaseSampler,
        direction: str,
        space: SearchSpace,
        launch: Launch,
    ) -> None:
        quiet_libraries()
        self.storage = self._open_storage(storage)
        self.study = optuna.create_study(
            study_name=study_name,
            storage=self.storage,
            sampler=sampler,
            direction=direction,
            load_if_exists=True,
        )
        if self.study.direction != StudyDirection[direction.upper()]:
            raise ConfigError(
                f"hydra.sweeper.direction={direction} is invalid: study {study_name} in "
                f"{storage} is a {self.study.direction.name.lower()} study"
            )
        self.study_id = self.storage.get_study_id_from_name(self.study.study_name)
        self.space = space
        self.launch = launch

    @staticmethod
    def _open_storage(url: str | None) -> optuna.storages.BaseStorage:
        if url is None:
            return optuna.storages.InMemoryStorage()
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as exc:  # any failure to open the user's database is the user's to fix
            cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"hydra.sweeper.storage={url} cannot be opened: {cause}") from exc

    def finished(self) -> int:
        """The study's trials that count towards its number of trials (:data:`FINISHED`)."""
        return len(self.study.get_trials(deepcopy=False, states=FINISHED))

    def run(self, n_trials: int, n_jobs: int) -> None:
        """Run again the trials an earlier search left running (stopped before it could tell
        them), then ask, launch and tell batches of up to ``n_jobs`` trials until the study has
        ``n_trials`` finished ones."""
        left = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if left:
            numbers = ", ".join(str(t.number) for t in left)
            log.info("trials %s were left running by a stopped search: running them again", numbers)
            self._run_trials(left)
        while (done := self.finished()) < n_trials:
            size = min(n_jobs, n_trials - done)
            self._run_trials([self.study.ask(self.space.distributions) for _ in range(size)])

    def _run_trials(self, trials: Sequence[Trial | FrozenTrial]) -> None:
        """Launch the jobs of ``trials``, each run of consecutive trial numbers as one batch
        whose job numbers are the trial numbers, and tell the study their outcomes."""
        for run in _consecutive(trials):
            outcomes = self.launch([self.space.overrides(t.params) for t in run], run[0].number)
            for trial, (value, run_dir) in zip(run, outcomes, strict=True):
                self.tell(trial.number, value, run_dir)

    def tell(self, number: int, value: float | None, run_dir: str | None) -> None:
        """Record trial ``number``'s run directory, then finish it: COMPLETE with ``value``,
        FAIL when its job failed (None); one log line."""
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        if run_dir is not None:
            self.storage.set_trial_user_attr(trial_id, RUN_DIR_ATTR, run_dir)
        if value is None:
            trial = self.study.tell(number, state=TrialState.FAIL)
        else:
            trial = self.study.tell(number, value)
        best = self.best()
        best_text = f"trial {best.number}, {best.value}" if best else "none yet"
        log.info(
            "trial %d %s: %s %s; best: %s",
            number, trial.state.name, trial.value, trial.params, best_text,
        )  # fmt: skip

    def best(self) -> FrozenTrial | None:
        """The best COMPLETE trial (None when there is none)."""
        try:
            return self.study.best_trial
        except ValueError:
            return None

    def summary(self) -> dict[str, Any]:
        """The study in brief: its name, direction, trials by state and its best trial."""
        trials = self.study.get_trials(deepcopy=False)
        best = self.best()
        return {
            "name": "optuna",
            "study_name": self.study.study_name,
            "direction": self.study.direction.name.lower(),
            "trials": {s.name: n for s in TrialState if (n := sum(t.state == s for t in trials))},
            "best_trial": best.number if best else None,
            "best_value": best.value if best else None,
            "best_params": best.params if best else None,
        }
