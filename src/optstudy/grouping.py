"""Which jobs of a sweep can train together, and the group a run is training in.

A group is a set of jobs that share data, model, module settings, augmentation, optimizer
class and settings, schedule kind, batch size and budget, and differ only in per-member values
(:data:`PER_MEMBER`: the seed, the lr, the schedule's own numbers, when to stop early). The
grouping launcher (``launcher=grouped``) trains each group in one process; every member still
writes its own run directory, plus the group it trained in (``metrics.json``: ``group``).

Imports neither torch nor Lightning: the launcher plans a sweep before anything is trained.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from optstudy.artifacts import NOT_EXPERIMENT, is_experiment_key

log = logging.getLogger(__name__)

# Config keys (dotted prefixes) in which the members of a group may differ. The schedule's
# kind (its _target_) must match; its numbers may not.
PER_MEMBER = (
    "seed",
    "optimizer.lr",
    "optimizer.search_space",
    "scheduler",
    "callbacks",
    "logger",
    "hydra",
)
# Always part of the group key, although under a PER_MEMBER prefix.
SHARED_UNDER_PER_MEMBER = ("scheduler._target_", "scheduler.lightning.interval")
# How a group trains: one member after the other (sequential), or "auto": what is fastest on
# the device (sequential on CPU; see README "Grouped sweeps").
MODES = ("auto", "sequential")


@dataclass(frozen=True)
class GroupInfo:
    """The group a run trained in, as metrics.json records it."""

    id: int  # the group's number within its sweep
    size: int  # members in the group
    mode: str  # how the group trained: sequential
    member: int  # this run's place in the group (0-based)


_current: ContextVar[GroupInfo | None] = ContextVar("optstudy_group", default=None)


def current_group() -> dict[str, Any] | None:
    """The group the run being trained belongs to, as plain data (None outside a group)."""
    group = _current.get()
    return None if group is None else asdict(group)


@contextmanager
def in_group(group: GroupInfo) -> Iterator[None]:
    """Mark the runs trained inside the ``with`` block as members of ``group``."""
    token = _current.set(group)
    try:
        yield
    finally:
        _current.reset(token)


def _flat(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The config's leaves as ``{dotted key: value}`` (resolved where it can be; a value that
    cannot be resolved outside a running job stays as written)."""
    container = (
        OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else dict(cfg)
    )
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping) and node:
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            flat[prefix] = node

    walk(container, "")
    return flat


def _shared(key: str) -> bool:
    if key in SHARED_UNDER_PER_MEMBER:
        return True
    return is_experiment_key(key) and is_experiment_key(key, PER_MEMBER)


def group_key(cfg: DictConfig | Mapping[str, Any]) -> str:
    """What a job must share with the other members of its group, as one comparable string."""
    shared = {k: v for k, v in _flat(cfg).items() if _shared(k)}
    return json.dumps(shared, sort_keys=True, default=str)


def differences(configs: Sequence[DictConfig | Mapping[str, Any]]) -> list[str]:
    """The dotted keys whose values differ among ``configs`` (the members of one group)."""
    flats = [_flat(c) for c in configs]
    keys = sorted(set().union(*flats))
    return [
        k
        for k in keys
        if is_experiment_key(k, (*NOT_EXPERIMENT, "hydra"))
        and len({json.dumps(f.get(k), default=str) for f in flats}) > 1
    ]


@dataclass(frozen=True)
class Group:
    """Jobs (their indices in the sweep) that train together."""

    id: int
    jobs: tuple[int, ...]


def plan_groups(
    configs: Sequence[DictConfig | Mapping[str, Any]], max_members: int | None = None
) -> list[Group]:
    """Group the jobs of a sweep (their configs, in job order) by :func:`group_key`, in the
    order of each group's first job; a group larger than ``max_members`` is split into
    consecutive groups of at most that many."""
    by_key: dict[str, list[int]] = {}
    for index, cfg in enumerate(configs):
        by_key.setdefault(group_key(cfg), []).append(index)
    size = max_members or max(len(configs), 1)
    chunks = [jobs[i : i + size] for jobs in by_key.values() for i in range(0, len(jobs), size)]
    return [Group(number, tuple(jobs)) for number, jobs in enumerate(chunks)]


def describe(
    groups: Sequence[Group], configs: Sequence[DictConfig], job_ids: Sequence[int]
) -> Iterator[str]:
    """Log lines that say how a sweep was grouped and why a job trains alone."""
    singles = sum(len(g.jobs) == 1 for g in groups)
    yield (
        f"grouped {len(configs)} jobs into {len(groups) - singles} group(s) of several members "
        f"and {singles} job(s) on their own"
    )
    for group in groups:
        ids = " ".join(f"#{job_ids[i]}" for i in group.jobs)
        if len(group.jobs) == 1:
            yield (
                f"  job {ids} trains alone: no other job of the sweep has the same data, model, "
                "optimizer class and settings, schedule kind, batch size and budget"
            )
            continue
        varying = differences([configs[i] for i in group.jobs])
        yield (
            f"  group {group.id}: {len(group.jobs)} members (jobs {ids}), differing in "
            f"{', '.join(varying) or 'nothing'}"
        )


class Progress:
    """Runs done of a sweep's total, with the time spent and an estimate of the time left."""

    def __init__(self, total: int, phase: str | None = None) -> None:
        self.total, self.phase, self.finished = total, phase, 0
        self.start = time.perf_counter()

    def done(self) -> str:
        """Count one more finished run; the progress line to log."""
        self.finished += 1
        spent = time.perf_counter() - self.start
        left = spent / self.finished * (self.total - self.finished)
        phase = f" of phase {self.phase}" if self.phase else ""
        return (
            f"progress: {self.finished}/{self.total} runs{phase} done, {_minutes(spent)} "
            f"spent, about {_minutes(left)} left"
        )


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
