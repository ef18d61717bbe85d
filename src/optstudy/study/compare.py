"""The automatic reading of a study: which configurations differ from the best of their task
by more than seed noise (Welch's t-test over seeds)."""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats

# Significance level of the tests; no correction for the number of comparisons.
ALPHA = 0.05


def _welch_p(a: pd.Series, b: pd.Series) -> float:
    """Two-sided p-value of Welch's t-test; NaN when either side has fewer than two values or
    both are constant."""
    a, b = a.dropna(), b.dropna()
    if len(a) < 2 or len(b) < 2 or (a.std() == 0 and b.std() == 0):
        return math.nan
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def _verdict(p_value: float, seeds: int) -> str:
    if seeds == 0:
        return "no completed run"
    if math.isnan(p_value):
        return "cannot tell (fewer than 2 seeds)"
    return "within seed noise" if p_value >= ALPHA else "worse beyond seed noise"


def compare_to_best(summary: pd.DataFrame, runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per task, each configuration against the one with the best mean ``metric``: columns
    ``task``, ``config``, ``seeds``, ``mean``, ``std``, ``difference`` (to the best), ``p_value``
    and ``verdict`` (best, within seed noise, worse beyond seed noise, cannot tell...).
    ``summary`` comes from :func:`~optstudy.study.aggregate.summarize` over ``runs``."""
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
    values = {name: group[metric] for name, group in completed.groupby(["task", "config"])}
    rows = []
    for task, group in table.groupby("task", sort=False):
        best = group.loc[group["mean"].idxmax()] if group["mean"].notna().any() else None
        for _, row in group.iterrows():
            if best is not None and row["config"] == best["config"]:
                rows.append({**row, "difference": 0.0, "p_value": math.nan, "verdict": "best"})
                continue
            empty = pd.Series(dtype=float)
            p_value = (
                _welch_p(values.get((task, row["config"]), empty), values[(task, best["config"])])
                if best is not None
                else math.nan
            )
            difference = row["mean"] - best["mean"] if best is not None else math.nan
            verdict = _verdict(p_value, row["seeds"])
            rows.append({**row, "difference": difference, "p_value": p_value, "verdict": verdict})
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
            names = ", ".join(f"{r.config} (p={r.p_value:.3f})" for r in noise.itertuples())
            text += f" Within seed noise of it: {names}."
        if not worse.empty:
            names = ", ".join(
                f"{r.config} ({r.difference:+.4f}, p={r.p_value:.3f})" for r in worse.itertuples()
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
    sentences.append(
        f"Welch's t-test over seeds at α = {ALPHA}, each configuration against its task's best, "
        "without correction for multiple comparisons; with few seeds a real difference can "
        "still read as noise."
    )
    return sentences
