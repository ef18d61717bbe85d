"""Find run directories and load their configs, metrics and histories into pandas.

A run directory is any folder holding ``.hydra/config.yaml``; it is finished when it also holds
``metrics.json``. Unfinished ones are kept as ``status == "incomplete"``: listed, never averaged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from optstudy.artifacts import (
    CHOICE_GROUPS,
    CONFIG_FILE,
    DIAGNOSTICS_COLUMNS,
    DIAGNOSTICS_FILE,
    HISTORY_COLUMNS,
    HISTORY_FILE,
    HYDRA_FILE,
    INCOMPLETE,
    METRIC_FIELDS,
    STEP_LOG_FILE,
    is_experiment_key,
    read_metrics,
)
from optstudy.errors import OptstudyError

# Hydra config groups whose choice is no setting of its own (its settings are in the config).
NOT_CHOICES = ("hydra", "paths", "logger", "study", "hparams_search", "experiment", "variant")
# The optimizer choice that takes a user's own class (conf/optimizer/custom.yaml).
CUSTOM_OPTIMIZER = "custom"
CONFIG_PREFIX = "cfg."
CHOICE_PREFIX = "choice."


class StudyError(OptstudyError):
    """The given paths hold no usable run directory."""


@dataclass(frozen=True)
class Study:
    """All runs found under some paths.

    ``runs``: one row per run directory: ``run`` (its path), ``status`` (completed, diverged or
    incomplete), ``seed``, ``lr``, ``study``, ``phase`` and ``study_task`` (a tuned study's
    name, phase and task name, else None), ``job`` (its number in its sweep, from Hydra; None
    for a single run), the metrics.json fields of
    :data:`~optstudy.artifacts.METRIC_FIELDS`, the choices of
    :data:`~optstudy.artifacts.CHOICE_GROUPS`, the other config-group choices as
    ``choice.<group>`` and every hyper-parameter as ``cfg.<dotted key>`` (the seed and the
    keys of :data:`~optstudy.artifacts.NOT_EXPERIMENT` are none).
    ``histories``: history.csv of every run, long, with its ``run``.
    ``diagnostics``: diagnostics.csv of every run that has one, long, with its ``run``.
    """

    runs: pd.DataFrame
    histories: pd.DataFrame
    diagnostics: pd.DataFrame


def find_run_dirs(paths: Iterable[Path]) -> list[Path]:
    """Run directories at or below ``paths`` (sorted); :class:`StudyError` when a path is
    missing or none is found."""
    found: set[Path] = set()
    for path in map(Path, paths):
        if not path.exists():
            raise StudyError(f"{path} does not exist")
        candidates = [path / CONFIG_FILE, *path.rglob(CONFIG_FILE)]
        found.update(c.parent.parent for c in candidates if c.is_file())
    if not found:
        raise StudyError(
            "no run directory (a folder with .hydra/config.yaml) under "
            + ", ".join(map(str, paths))
        )
    return sorted(found)


def _flat_config(config: DictConfig) -> dict[str, Any]:
    """The hyper-parameters of a config as ``{"cfg.<dotted key>": value}``; lists as JSON text."""
    flat = pd.json_normalize(OmegaConf.to_container(config), sep=".").iloc[0].to_dict()
    return {
        CONFIG_PREFIX + key: json.dumps(value) if isinstance(value, list | dict) else value
        for key, value in flat.items()
        if key != "seed" and is_experiment_key(key)
    }


def _hydra(run_dir: Path) -> DictConfig | None:
    """Hydra's own config of the run (None without hydra.yaml)."""
    hydra_yaml = run_dir / HYDRA_FILE
    return OmegaConf.load(hydra_yaml).hydra if hydra_yaml.is_file() else None


def _choices(hydra: DictConfig | None) -> dict[str, str]:
    """The config-group choices Hydra recorded for the run (empty without hydra.yaml)."""
    if hydra is None:
        return {}
    choices = hydra.runtime.choices
    return {
        group: option
        for group, option in choices.items()
        if group.split("/")[0] not in NOT_CHOICES and option is not None
    }


def load_run(run_dir: Path) -> dict[str, Any]:
    """One row of :attr:`Study.runs` for ``run_dir``."""
    config = OmegaConf.load(run_dir / CONFIG_FILE)
    metrics = read_metrics(run_dir) or {}
    hydra = _hydra(run_dir)
    row: dict[str, Any] = {
        "run": str(run_dir),
        "status": metrics.get("status", INCOMPLETE),
        "seed": config.get("seed"),
        "lr": OmegaConf.select(config, "optimizer.lr"),
        "study": OmegaConf.select(config, "study.name"),  # a tuned study's name
        "phase": OmegaConf.select(config, "study.phase"),  # tune, defaults, final (tuned study)
        "study_task": OmegaConf.select(config, "study.task"),
        "job": OmegaConf.select(hydra, "job.num") if hydra is not None else None,  # in its sweep
    }
    row.update({key: metrics.get(key) for key in METRIC_FIELDS})
    choices = _choices(hydra)
    row.update({group: choices.get(group, metrics.get(group)) for group in CHOICE_GROUPS})
    if row["optimizer"] == CUSTOM_OPTIMIZER:  # a user's own class: named by its import path
        row["optimizer"] = OmegaConf.select(config, "optimizer._target_")
    row.update({CHOICE_PREFIX + g: v for g, v in choices.items() if g not in CHOICE_GROUPS})
    row.update(_flat_config(config))
    return row


def _load_csv(run_dir: Path, name: str, columns: tuple[str, ...]) -> pd.DataFrame:
    path = run_dir / name
    frame = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=columns)
    return frame.assign(run=str(run_dir))


def load_history(run_dir: Path) -> pd.DataFrame:
    """history.csv of a run (empty when it has none yet), with a ``run`` column."""
    return _load_csv(run_dir, HISTORY_FILE, HISTORY_COLUMNS)


def load_diagnostics(run_dir: Path) -> pd.DataFrame:
    """diagnostics.csv of a run (empty when it has none: diagnostics off, or an older run),
    with a ``run`` column."""
    return _load_csv(run_dir, DIAGNOSTICS_FILE, DIAGNOSTICS_COLUMNS)


def load_lr_steps(run_dir: Path) -> pd.DataFrame:
    """The lr by optimizer step (columns ``step``, ``lr``, sorted): each epoch's starting lr
    from history.csv at the epoch's first step, plus the ``lr-*`` column that Lightning's
    ``csv/metrics.csv`` holds every ``log_every_n_steps``."""
    run_dir = Path(run_dir)
    parts = []
    history, metrics = load_history(run_dir), read_metrics(run_dir)
    if not history.empty and metrics is not None:
        steps_per_epoch = metrics["steps"] / max(metrics["epochs"], 1)
        parts.append(
            pd.DataFrame({"step": history["epoch"] * steps_per_epoch, "lr": history["lr"]})
        )
    log_file = run_dir / STEP_LOG_FILE
    log = pd.read_csv(log_file) if log_file.is_file() else pd.DataFrame()
    lr_column = next((c for c in log.columns if c.startswith("lr-")), None)
    if lr_column is not None:
        parts.append(log[["step", lr_column]].dropna().rename(columns={lr_column: "lr"}))
    if not parts:
        return pd.DataFrame(columns=["step", "lr"])
    steps = pd.concat(parts, ignore_index=True).sort_values("step", kind="stable")
    return steps.drop_duplicates("step", keep="last").reset_index(drop=True)


def load_study(paths: Iterable[Path]) -> Study:
    """Load every run directory at or below ``paths``; :class:`StudyError` when none finished."""
    paths = list(paths)
    run_dirs = find_run_dirs(paths)
    runs = pd.DataFrame([load_run(d) for d in run_dirs])
    if (runs["status"] == INCOMPLETE).all():
        where = ", ".join(map(str, paths))
        raise StudyError(f"no finished run (with metrics.json) among the {len(runs)} under {where}")
    histories = pd.concat([load_history(d) for d in run_dirs], ignore_index=True)
    histories = histories.astype({column: float for column in HISTORY_COLUMNS})
    diagnostics = pd.concat([load_diagnostics(d) for d in run_dirs], ignore_index=True)
    numbers = [column for column in DIAGNOSTICS_COLUMNS if column != "layer"]
    diagnostics = diagnostics.astype({column: float for column in numbers})
    return Study(runs=runs, histories=histories, diagnostics=diagnostics)
