"""AlgoPerf-style performance profiles over tasks (Dahl et al., 2023; Dolan & Moré, 2002).

A configuration's cost on a task is the median over its seeds of its time to the task's
validation target, a seed that never reached it (or diverged) counting as infinite. Its
performance ratio r is that cost over the fastest configuration's on the task, capped at
r_max; a configuration that never reaches the target (or did not run the task) gets r_max.
ρ(τ) is the share of tasks with r ≤ τ, for τ from 1 to r_max, and the score is the area under
ρ over [1, r_max] divided by r_max − 1: 1 for the fastest on every task, 0 for one that never
comes within r_max.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

R_MAX = 4.0  # AlgoPerf's r_max
# Time-to-target columns of the prepared runs a profile can be drawn over.
COSTS = {"steps": "steps_to_target", "seconds": "seconds_to_target"}


def time_costs(runs: pd.DataFrame, label: str, column: str) -> pd.DataFrame:
    """Tasks × configurations (named by the ``label`` column of ``runs``): the median over
    each configuration's runs of ``column`` (a time to target), ∞ for a run that did not
    complete or never reached the target; NaN where a configuration has no run of a task."""
    cost = runs[column].where(runs["status"] == "completed").fillna(math.inf)
    frame = runs[["task", label]].assign(cost=cost.astype(float))
    return frame.pivot_table(index="task", columns=label, values="cost", aggfunc="median")


def performance_ratios(costs: pd.DataFrame, r_max: float = R_MAX) -> pd.DataFrame:
    """Each cost over its task's (row's) smallest, capped at ``r_max``; ∞, NaN and a task that
    no configuration finished give ``r_max``."""
    fastest = costs.replace(math.inf, np.nan).min(axis=1)
    ratios = costs.div(fastest, axis=0)
    return ratios.replace(math.inf, np.nan).fillna(r_max).clip(upper=r_max)


def rho(ratios: pd.DataFrame, taus: np.ndarray) -> pd.DataFrame:
    """ρ(τ) of every configuration (columns) at each of ``taus`` (index): the share of tasks
    whose ratio is at most τ."""
    shares = (ratios.to_numpy()[None, :, :] <= np.asarray(taus)[:, None, None]).mean(axis=1)
    return pd.DataFrame(shares, index=pd.Index(taus, name="tau"), columns=ratios.columns)


def profile_scores(ratios: pd.DataFrame, r_max: float = R_MAX) -> pd.Series:
    """The area under each configuration's ρ over [1, r_max] over r_max − 1, exactly: a task
    with ratio r adds (r_max − r) / (r_max − 1) to the mean. Best first."""
    scores = ((r_max - ratios) / (r_max - 1)).mean()
    return scores.sort_values(ascending=False, kind="stable").rename("score")
