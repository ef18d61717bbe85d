"""Select each configuration's setting from its tuning runs, on validation only.

For every task and ``<optimizer>-<scheduler>`` configuration, each tried setting (the values of
the optimizer's searched arguments) scores the mean of the study's tuning metric (validation:
``best_val_acc`` or ``final_val_acc``) over the tuning seeds; a run that diverged or did not
finish scores :data:`~optstudy.sweep.DIVERGED_OBJECTIVE`. The best score wins; a tie goes to
the setting listed first (smaller values first). The test split is never read.

Writes ``selected.yaml`` (``<optimizer>-<scheduler>`` → task → setting: what the final runs
use, a DVC params file) and ``selection.json`` (the evidence: score, settings tried, how many
diverged; a DVC metric).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from optstudy.artifacts import COMPLETED
from optstudy.atomic import atomic_write_json, atomic_write_text
from optstudy.errors import ConfigError
from optstudy.study.collect import CONFIG_PREFIX, Study
from optstudy.study.protocol import Protocol, configuration
from optstudy.sweep import DIVERGED_OBJECTIVE

SELECTED_FILE = "selected.yaml"
SELECTION_FILE = "selection.json"


def run_scores(runs: pd.DataFrame, metric: str) -> pd.Series:
    """Each run's selection score: its metric if it completed, else the diverged score."""
    completed = runs["status"] == COMPLETED
    return runs[metric].where(completed & runs[metric].notna(), DIVERGED_OBJECTIVE).astype(float)


def select_settings(
    study: Study, protocol: Protocol, search_spaces: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{<optimizer>-<scheduler>: {task: {"setting": {...}, "score": …, "tried": n,
    "diverged": n}}}`` from the tune-phase runs of ``study``."""
    runs = study.runs[study.runs["phase"] == "tune"].copy()
    if runs.empty:
        raise ConfigError("no tuning runs (study.phase=tune) to select from")
    runs["score"] = run_scores(runs, protocol.tuning.metric)
    chosen: dict[str, dict[str, dict[str, Any]]] = {}
    for (task, optimizer, scheduler), group in runs.groupby(
        ["study_task", "optimizer", "scheduler"], sort=True
    ):
        arguments = sorted(search_spaces[optimizer])
        columns = [CONFIG_PREFIX + f"optimizer.{name}" for name in arguments]
        by_setting = group.groupby(columns, sort=True)
        mean = by_setting["score"].mean()
        best = mean.idxmax()
        values = best if isinstance(best, tuple) else (best,)
        entry = {
            "setting": {name: _plain(v) for name, v in zip(arguments, values, strict=True)},
            "score": float(mean.max()),
            "tried": len(mean),
            "diverged": int((group["status"] != COMPLETED).sum()),
        }
        chosen.setdefault(configuration(optimizer, scheduler), {})[task] = entry
    return chosen


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return float(value)
    return value.item() if hasattr(value, "item") else value


def write_selection(chosen: Mapping[str, Mapping[str, Mapping[str, Any]]], out_dir: Path) -> None:
    """Write ``selected.yaml`` (the settings) and ``selection.json`` (with the evidence)."""
    settings = {
        config: {task: dict(entry["setting"]) for task, entry in tasks.items()}
        for config, tasks in chosen.items()
    }
    header = "# Settings selected on validation from the tuning runs (optstudy.study.select).\n"
    atomic_write_text(out_dir / SELECTED_FILE, header + yaml.safe_dump(settings, sort_keys=True))
    atomic_write_json(out_dir / SELECTION_FILE, chosen)


def read_selected(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """The settings of a ``selected.yaml``; :class:`ConfigError` when it is missing."""
    if not Path(path).is_file():
        raise ConfigError(f"{path} does not exist: run the tune phase and select first")
    return yaml.safe_load(Path(path).read_text()) or {}
