"""Aggregate runs over seeds: one row per configuration with mean, std and a 95% interval.

A configuration is everything a run was trained with except its seed. The summary names it by
:data:`BASE_COLUMNS` plus any other choice or hyper-parameter that takes several values among
runs agreeing on those. A task is a (data, model) pair.
"""

from __future__ import annotations

import math

import pandas as pd

from optstudy.artifacts import TASK_GROUPS, task_label
from optstudy.study.collect import CHOICE_PREFIX, CONFIG_PREFIX, Study
from optstudy.study.protocol import configuration
from optstudy.study.stats import interval

# The task of a run (see task_labels), then what else always tells configurations apart: the
# phase of a tuned study (tune, defaults, final; None in a plain sweep) and the choices.
TASK_COLUMNS = ["task"]
BASE_COLUMNS = [*TASK_COLUMNS, "phase", *TASK_GROUPS, "optimizer", "scheduler", "lr"]
# Run values summarised over the seeds of a configuration.
STAT_METRICS = (
    "best_val_acc",
    "final_val_acc",
    "test_acc",
    "final_val_loss",
    "final_train_loss",
    "epochs_to_target",
    "steps_to_target",
    "seconds_to_target",
    "train_time_s",
)
# What picks the best lr of an optimizer: validation, never test.
SELECTION_METRIC = "best_val_acc"
# Default target of time-to-target: this share of the task's best mean best_val_acc.
TARGET_FRACTION = 0.95


def task_labels(frame: pd.DataFrame) -> pd.Series:
    """The task of every row of ``frame``: its tuned study's task name (``study_task``) when it
    has one, else :func:`~optstudy.artifacts.task_label` of its data and model."""
    named = frame["study_task"] if "study_task" in frame else pd.Series(None, index=frame.index)
    return pd.Series(
        [
            name if isinstance(name, str) else task_label(data, model)
            for name, data, model in zip(named, frame["data"], frame["model"], strict=True)
        ],
        index=frame.index,
        dtype=object,
    )


def _display_name(column: str) -> str:
    return column.removeprefix(CONFIG_PREFIX).removeprefix(CHOICE_PREFIX)


def config_columns(runs: pd.DataFrame) -> list[str]:
    """:data:`BASE_COLUMNS` plus the ``choice.*`` / ``cfg.*`` columns of ``runs`` that vary
    among runs with equal base columns (what else distinguishes a configuration)."""
    groups = runs.groupby(BASE_COLUMNS, dropna=False)
    candidates = [
        c
        for c in runs.columns
        if c.startswith((CHOICE_PREFIX, CONFIG_PREFIX)) and c != CONFIG_PREFIX + "optimizer.lr"
    ]
    varying = groups[candidates].nunique(dropna=False).max() if len(candidates) else pd.Series()
    return BASE_COLUMNS + [c for c in candidates if varying.get(c, 0) > 1]


def mean_std_ci(values: pd.Series) -> dict[str, float]:
    """Mean, sample std and the 95% Student-t interval of the mean of the non-NaN ``values``
    (std and interval NaN with fewer than two values)."""
    values = values.dropna().astype(float)
    n = len(values)
    mean = values.mean() if n else math.nan
    std = values.std(ddof=1) if n > 1 else math.nan
    low, high = interval(values, 0.95)
    return {"mean": mean, "std": std, "ci95_low": low, "ci95_high": high}


def task_targets(runs: pd.DataFrame, target: float | None, fraction: float) -> pd.Series:
    """Target validation accuracy per task: ``target`` when given, else ``fraction`` × the
    best mean ``best_val_acc`` of the task's configurations (in a tuned study, of its final
    runs: the tuned configurations on their fresh seeds)."""
    tasks = pd.MultiIndex.from_frame(runs[TASK_COLUMNS].drop_duplicates())
    if target is not None:
        return pd.Series(target, index=tasks, name="target_acc")
    final = runs["phase"] == "final"
    completed = runs[(runs["status"] == "completed") & (final if final.any() else True)]
    best = (
        completed.groupby(config_columns(runs), dropna=False)[SELECTION_METRIC]
        .mean()
        .groupby(TASK_COLUMNS)
        .max()
    )
    return (fraction * best).reindex(tasks).rename("target_acc")


def time_to_target(runs: pd.DataFrame, histories: pd.DataFrame) -> pd.DataFrame:
    """Per completed run (index ``run``): ``epochs_to_target`` (epochs trained when val_acc
    first reached the run's ``target_acc``), ``steps_to_target`` (optimizer steps by then: its
    steps per epoch from metrics.json × those epochs) and ``seconds_to_target`` (training
    seconds by then); runs that never reached it are absent."""
    columns = ["run", "status", "target_acc", "steps", "epochs"]
    history = histories.merge(runs[columns], on="run")
    reached = history[
        (history["status"] == "completed") & (history["val_acc"] >= history["target_acc"])
    ]
    first = reached.sort_values("epoch").groupby("run").first()
    epochs = first["epoch"] + 1
    return pd.DataFrame(
        {
            "epochs_to_target": epochs,
            "steps_to_target": epochs * first["steps"] / first["epochs"],
            "seconds_to_target": first["elapsed_s"],
        }
    )


def _label(row: pd.Series, columns: list[str]) -> str:
    parts = [str(row["optimizer"])]
    for c in columns:
        value = row[c]
        if isinstance(value, float) and math.isnan(value):
            continue  # a key this run has no value for, e.g. another optimizer's argument
        parts.append(f"{c}={value:g}" if c == "lr" else f"{c}={value}")
    return " ".join(parts)


def prepare_runs(
    study: Study, target: float | None = None, target_fraction: float = TARGET_FRACTION
) -> pd.DataFrame:
    """``study.runs`` plus ``task`` (see :func:`task_labels`), ``config`` (a short name of the
    configuration, e.g. ``adam`` or ``sgd lr=0.1 scheduler=exp_formula``: the optimizer and
    every other non-task configuration column that varies, ``cfg.``/``choice.`` dropped),
    ``lr_group`` (the same without the lr), ``configuration`` (``<optimizer>-<scheduler>``, what
    a tuned study compares), ``target_acc``, ``epochs_to_target``, ``steps_to_target`` and
    ``seconds_to_target`` (see :func:`task_targets`, :func:`time_to_target`)."""
    runs = study.runs.copy()
    runs["task"] = task_labels(runs)
    runs["configuration"] = [
        configuration(o, s) for o, s in zip(runs["optimizer"], runs["scheduler"], strict=True)
    ]
    columns = config_columns(runs)
    named = [
        c
        for c in columns
        if c not in (*TASK_COLUMNS, *TASK_GROUPS, "phase", "optimizer")
        and runs[c].nunique(dropna=False) > 1
    ]
    display = runs.rename(columns={c: _display_name(c) for c in named})
    named = [_display_name(c) for c in named]
    runs["config"] = display.apply(_label, axis=1, columns=named)
    runs["lr_group"] = display.apply(_label, axis=1, columns=[c for c in named if c != "lr"])
    runs = runs.join(task_targets(runs, target, target_fraction), on=TASK_COLUMNS)
    return runs.join(time_to_target(runs, study.histories), on="run")


def _summarize_group(group: pd.DataFrame) -> pd.Series:
    completed = group[group["status"] == "completed"]
    row: dict[str, object] = {
        "config": group["config"].iloc[0],
        "lr_group": group["lr_group"].iloc[0],
        "runs": len(group),
        "seeds": completed["seed"].nunique(),
        "diverged": int((group["status"] == "diverged").sum()),
        "incomplete": int((group["status"] == "incomplete").sum()),
        "reached_target": int(completed["epochs_to_target"].notna().sum()),
        "target_acc": group["target_acc"].iloc[0],
    }
    for metric in STAT_METRICS:
        for stat, value in mean_std_ci(completed[metric]).items():
            row[f"{metric}_{stat}"] = value
    return pd.Series(row)


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration of ``runs`` (from :func:`prepare_runs`): its columns (see
    :func:`config_columns`, ``cfg.``/``choice.`` dropped) after its ``task``, the ``config`` and
    ``lr_group`` labels,
    counts of runs, seeds, diverged and incomplete runs and of runs that reached the target,
    mean/std/95% CI of :data:`STAT_METRICS` over completed runs, ``lrs_tried`` and ``best_lr``
    (the best mean :data:`SELECTION_METRIC` of its lr-group: trivially true for a lone lr).
    Sorted by task, then by that metric, best first."""
    columns = config_columns(runs)
    summary = (
        runs.groupby(columns, dropna=False)[runs.columns.drop(columns)]
        .apply(_summarize_group)
        .reset_index()
        .rename(columns={c: _display_name(c) for c in columns})
    )
    counts = ["runs", "seeds", "diverged", "incomplete", "reached_target"]
    summary[counts] = summary[counts].astype(int)
    score = summary[f"{SELECTION_METRIC}_mean"]
    by_lr_group = summary.groupby([*TASK_COLUMNS, "lr_group"], dropna=False)
    summary["lrs_tried"] = by_lr_group["lr"].transform("nunique")
    summary["best_lr"] = score.notna() & (score == by_lr_group[score.name].transform("max"))
    return summary.sort_values(
        [*TASK_COLUMNS, score.name],
        ascending=[True] * len(TASK_COLUMNS) + [False],
        na_position="last",
    ).reset_index(drop=True)
