"""The automatic reading of a study: which configurations differ from the best of their task
by more than seed noise (Welch's t-test over seeds, Holm-corrected over the task's
comparisons)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from optstudy.study.stats import ALPHA, holm, welch

VERDICTS = ("best", "within seed noise", "worse beyond seed noise")
CANNOT_TELL = "cannot tell (fewer than 2 seeds)"


def _verdict(p_holm: float, seeds: int) -> str:
    if seeds == 0:
        return "no completed run"
    if math.isnan(p_holm):
        return CANNOT_TELL
    return VERDICTS[1] if p_holm >= ALPHA else VERDICTS[2]


def _task_rows(group: pd.DataFrame, values: dict) -> list[dict]:
    """The comparison rows of one task's configurations (``values``: config → its values)."""
    if not group["mean"].notna().any():
        return [{**row, "difference": math.nan, "p_value": math.nan, "p_holm": math.nan,
                 "comparisons": 0, "verdict": _verdict(math.nan, row["seeds"])}
                for _, row in group.iterrows()]  # fmt: skip
    best = group.loc[group["mean"].idxmax(), "config"]
    empty = pd.Series(dtype=float)
    tests = {
        row["config"]: welch(values.get(row["config"], empty), values[best])
        for _, row in group.iterrows()
        if row["config"] != best
    }
    p_values = np.array([t.p_value for t in tests.values()])
    adjusted = dict(zip(tests, holm(p_values), strict=True))
    compared = int((~np.isnan(p_values)).sum())
    rows = []
    for _, row in group.iterrows():
        config = row["config"]
        if config == best:
            rows.append({**row, "difference": 0.0, "p_value": math.nan, "p_holm": math.nan,
                         "comparisons": compared, "verdict": VERDICTS[0]})  # fmt: skip
            continue
        rows.append(
            {
                **row,
                "difference": tests[config].difference,
                "p_value": tests[config].p_value,
                "p_holm": adjusted[config],
                "comparisons": compared,
                "verdict": _verdict(adjusted[config], row["seeds"]),
            }
        )
    return rows


def compare_to_best(summary: pd.DataFrame, runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per task, each configuration against the one with the best mean ``metric``: columns
    ``task``, ``config``, ``seeds``, ``mean``, ``std``, ``difference`` (to the best),
    ``p_value`` (Welch), ``p_holm`` (Holm-adjusted over the task's ``comparisons``: the
    configurations with a p-value) and ``verdict`` (best, within seed noise, worse beyond seed
    noise, cannot tell...). ``summary`` comes from
    :func:`~optstudy.study.aggregate.summarize` over ``runs``."""
    table = pd.DataFrame(
        {
            "task": summary["task"],
            "config": summary["config"],
            "seeds": summary["seeds"],
            "mean": summary[f"{metric}_mean"],
            "std": summary[f"{metric}_std"],
        }
    )
    completed = runs[runs["status"] == "completed"]
    rows = []
    for task, group in table.groupby("task", sort=False):
        task_runs = completed[completed["task"] == task]
        values = {name: g[metric] for name, g in task_runs.groupby("config")}
        rows += _task_rows(group, values)
    return pd.DataFrame(rows)


def reading(comparison: pd.DataFrame, summary: pd.DataFrame, metric: str) -> list[str]:
    """Plain sentences summing up ``comparison`` (from :func:`compare_to_best`) per task, plus
    the diverged and incomplete runs of ``summary``."""
    sentences = []
    for task, group in comparison.groupby("task", sort=False):
        best = group[group["verdict"] == "best"]
        if best.empty:
            sentences.append(f"{task}: no configuration completed a run.")
            continue
        b = best.iloc[0]
        spread = "" if math.isnan(b["std"]) else f" ± {b['std']:.4f}"
        seeds = f"{b['seeds']} seed" + ("s" if b["seeds"] > 1 else "")
        text = f"{task}: best {metric} is {b['config']} ({b['mean']:.4f}{spread}, {seeds})."
        noise = group[group["verdict"] == "within seed noise"]
        worse = group[group["verdict"] == "worse beyond seed noise"]
        unclear = group[group["verdict"].str.startswith("cannot tell")]
        if not noise.empty:
            names = ", ".join(f"{r.config} (p={r.p_holm:.3f})" for r in noise.itertuples())
            text += f" Within seed noise of it: {names}."
        if not worse.empty:
            names = ", ".join(
                f"{r.config} ({r.difference:+.4f}, p={r.p_holm:.3f})" for r in worse.itertuples()
            )
            text += f" Worse beyond seed noise: {names}."
        if not unclear.empty:
            text += f" Too few seeds to tell: {', '.join(unclear['config'])}."
        sentences.append(text)
    for column, what in (("diverged", "diverged"), ("incomplete", "did not finish")):
        hit = summary[summary[column] > 0]
        if not hit.empty:
            names = ", ".join(f"{r.config} ({r[column]} of {r.runs})" for _, r in hit.iterrows())
            sentences.append(f"Runs that {what}: {names}; they are left out of every mean.")
    counts = comparison.groupby("task", sort=False)["comparisons"].first()
    covered = ", ".join(f"{n} in {task}" for task, n in counts.items())
    sentences.append(
        f"Welch's t-test over seeds at α = {ALPHA}, each configuration against its task's best; "
        f"p-values Holm-corrected within each task (comparisons: {covered}); with few seeds a "
        "real difference can still read as noise."
    )
    return sentences
