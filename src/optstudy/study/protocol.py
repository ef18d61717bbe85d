"""A tuned study as data (``conf/study/<name>.yaml``, its ``study`` block) and the runs it
implies, phase by phase:

- **tune**: each optimizer × schedule on each task, over the optimizer's search space (its
  ``search_space`` in ``conf/optimizer/``), on the tuning seeds;
- **defaults**: each optimizer × schedule at its library defaults on the final seeds (the
  one-shot budget, no tuning);
- **final**: each optimizer × schedule at the setting selected on validation from its tuning
  runs, on the final seeds (fresh: disjoint from the tuning seeds).

Every run is an ordinary ``train.py`` job; its overrides name the study, its task and phase
(``study.task``, ``study.phase``), so the report can tell them apart. Imports no torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from omegaconf import DictConfig, OmegaConf

from optstudy.errors import ConfigError

PHASES = ("tune", "defaults", "final")
GRID, OPTUNA_METHODS = "grid", ("tpe", "random", "qmc")
# Metrics the selection may use: validation only, never test.
SELECTION_METRICS = ("best_val_acc", "final_val_acc")


@dataclass(frozen=True)
class Task:
    """What the optimizers are compared on: a data set, a model and a budget."""

    name: str
    data: str
    model: str
    overrides: tuple[str, ...] = ()  # further train.py overrides of this task (its budget)

    def job_overrides(self) -> list[str]:
        """The train.py overrides that make a run of this task."""
        return [f"data={self.data}", f"model={self.model}", *self.overrides]


@dataclass(frozen=True)
class Tuning:
    """How each optimizer is tuned before the final runs."""

    method: str = GRID  # grid (log grid) or an Optuna sampler: tpe, random, qmc
    points_per_decade: int = 2  # grid: points per factor of 10 of each log-scaled range
    trials: int = 8  # Optuna methods: trials per optimizer, schedule and task
    seeds: tuple[int, ...] = (0,)
    metric: str = "best_val_acc"  # what selects the setting: validation only


@dataclass(frozen=True)
class Protocol:
    """The ``study`` block of a study config."""

    name: str
    tasks: tuple[Task, ...]
    optimizers: tuple[str, ...]
    schedulers: tuple[str, ...]
    tuning: Tuning
    final_seeds: tuple[int, ...]
    defaults: bool = True  # also run every optimizer at its library defaults


def _seeds(value: Any, key: str) -> tuple[int, ...]:
    seeds = tuple(value or ())
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"{key}={list(seeds)} is invalid: must be a non-empty list of integers")
    return seeds


def load_protocol(study: DictConfig | Mapping[str, Any]) -> Protocol:
    """Read and check a study config's ``study`` block; :class:`ConfigError` names the first
    invalid key."""
    spec = OmegaConf.to_container(study, resolve=True) if isinstance(study, DictConfig) else study
    spec = dict(spec)
    if "tuning" not in spec:
        raise ConfigError(
            f"study {spec.get('name')} has no study.tuning: it is a plain sweep "
            f"(python train.py -m study={spec.get('name')}), not a tuned study"
        )
    tasks = tuple(
        Task(name, task["data"], task["model"], tuple(task.get("overrides") or ()))
        for name, task in (spec.get("tasks") or {}).items()
    )
    if not tasks:
        raise ConfigError("study.tasks is empty: name at least one task (data, model)")
    tuning_spec = dict(spec["tuning"])
    tuning = Tuning(
        method=tuning_spec.get("method", GRID),
        points_per_decade=tuning_spec.get("points_per_decade", 2),
        trials=tuning_spec.get("trials", 8),
        seeds=_seeds(tuning_spec.get("seeds"), "study.tuning.seeds"),
        metric=tuning_spec.get("metric", "best_val_acc"),
    )
    if tuning.method not in (GRID, *OPTUNA_METHODS):
        raise ConfigError(
            f"study.tuning.method={tuning.method} is invalid: must be one of "
            f"{', '.join((GRID, *OPTUNA_METHODS))}"
        )
    if tuning.metric not in SELECTION_METRICS:
        raise ConfigError(
            f"study.tuning.metric={tuning.metric} is invalid: selection uses validation only, "
            f"one of {', '.join(SELECTION_METRICS)}"
        )
    final = _seeds((spec.get("final") or {}).get("seeds"), "study.final.seeds")
    if shared := sorted(set(final) & set(tuning.seeds)):
        raise ConfigError(
            f"study.final.seeds and study.tuning.seeds share {shared}: final runs need fresh "
            "seeds, disjoint from the tuning seeds"
        )
    return Protocol(
        name=spec["name"],
        tasks=tasks,
        optimizers=tuple(spec.get("optimizers") or ()),
        schedulers=tuple(spec.get("schedulers") or ("constant",)),
        tuning=tuning,
        final_seeds=final,
        defaults=bool(spec.get("defaults", True)),
    )


def log_grid(low: float, high: float, per_decade: int) -> list[float]:
    """Points from ``low`` to ``high`` (both included) evenly spaced in log10, ``per_decade``
    points per factor of 10 (rounded to 4 significant digits)."""
    if not 0 < low <= high:
        raise ConfigError(f"a log range needs 0 < low <= high, got [{low}, {high}]")
    steps = max(1, round(math.log10(high / low) * per_decade))
    points = [low * (high / low) ** (i / steps) for i in range(steps + 1)] if high > low else [low]
    return [float(f"{p:.4g}") for p in points]


def _linear_grid(low: float, high: float, points: int) -> list[float]:
    return [float(f"{low + (high - low) * i / (points - 1):.4g}") for i in range(points)]


def grid_values(search_space: Mapping[str, Mapping[str, Any]], per_decade: int) -> dict:
    """Each searched argument's grid: a log grid (``log: true``) with ``per_decade`` points a
    decade, or ``per_decade + 1`` evenly spaced points."""
    values = {}
    for name, space in search_space.items():
        low, high = float(space["low"]), float(space["high"])
        values[name] = (
            log_grid(low, high, per_decade)
            if space.get("log", False)
            else _linear_grid(low, high, per_decade + 1)
        )
    return values


@dataclass(frozen=True)
class Job:
    """One run of a study: its task, phase, optimizer, schedule, seed and setting."""

    task: Task
    phase: str
    optimizer: str
    scheduler: str
    seed: int
    setting: Mapping[str, Any] = field(default_factory=dict)  # optimizer argument → value

    def overrides(self) -> list[str]:
        """The train.py overrides of this run, after its study's ``study=<name>``."""
        setting = [f"optimizer.{k}={_override_value(v)}" for k, v in sorted(self.setting.items())]
        return [
            f"study.task={self.task.name}",
            f"study.phase={self.phase}",
            *self.task.job_overrides(),
            f"optimizer={self.optimizer}",
            f"scheduler={self.scheduler}",
            *setting,
            f"seed={self.seed}",
        ]


def _override_value(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def grid_settings(search_space: Mapping[str, Mapping[str, Any]], per_decade: int) -> list[dict]:
    """Every combination of the searched arguments' grids."""
    settings: list[dict] = [{}]
    for name, values in grid_values(search_space, per_decade).items():
        settings = [{**s, name: v} for s in settings for v in values]
    return settings


def tuning_jobs(
    protocol: Protocol, search_spaces: Mapping[str, Mapping[str, Any]]
) -> Iterator[Job]:
    """The grid runs of the tune phase (``search_spaces``: each optimizer's search space)."""
    for task in protocol.tasks:
        for optimizer in protocol.optimizers:
            settings = grid_settings(search_spaces[optimizer], protocol.tuning.points_per_decade)
            for scheduler in protocol.schedulers:
                for setting in settings:
                    for seed in protocol.tuning.seeds:
                        yield Job(task, "tune", optimizer, scheduler, seed, setting)


def defaults_jobs(protocol: Protocol) -> Iterator[Job]:
    """The one-shot runs: library defaults on the final seeds."""
    if not protocol.defaults:
        return
    for task in protocol.tasks:
        for optimizer in protocol.optimizers:
            for scheduler in protocol.schedulers:
                for seed in protocol.final_seeds:
                    yield Job(task, "defaults", optimizer, scheduler, seed)


def final_jobs(
    protocol: Protocol, selected: Mapping[str, Mapping[str, Mapping[str, Any]]]
) -> Iterator[Job]:
    """The final runs at the selected settings (``selected[<optimizer>-<scheduler>][task]``:
    the setting, see :mod:`optstudy.study.select`; a configuration without one is skipped)."""
    for task in protocol.tasks:
        for optimizer in protocol.optimizers:
            for scheduler in protocol.schedulers:
                setting = selected.get(configuration(optimizer, scheduler), {}).get(task.name)
                if setting is None:
                    continue
                for seed in protocol.final_seeds:
                    yield Job(task, "final", optimizer, scheduler, seed, dict(setting))


def configuration(optimizer: str, scheduler: str) -> str:
    """The name of an optimizer × schedule configuration: ``<optimizer>-<scheduler>``."""
    return f"{optimizer}-{scheduler}"


def _subset(chosen: Sequence[str] | None, available: tuple[str, ...], key: str) -> tuple[str, ...]:
    if not chosen:
        return available
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        raise ConfigError(f"{', '.join(unknown)} not in the study's {key}: {', '.join(available)}")
    return tuple(chosen)


def restrict(
    protocol: Protocol, optimizers: Sequence[str] | None, schedulers: Sequence[str] | None
) -> Protocol:
    """The protocol for some of its optimizers and schedules only (a DVC stage's share)."""
    return replace(
        protocol,
        optimizers=_subset(optimizers, protocol.optimizers, "study.optimizers"),
        schedulers=_subset(schedulers, protocol.schedulers, "study.schedulers"),
    )
