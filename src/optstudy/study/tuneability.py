"""Tuneability of each configuration from its tuning runs (DeepOBS; Schmidt et al., ICML 2021):
the best validation score expected after k tuning trials, and the share of the search space
that trains without diverging.

A trial is one setting of the searched arguments (its runs on the tuning seeds); its score is
what the selection uses (:func:`~optstudy.study.select.run_scores`: the tuning metric averaged
over the seeds, a diverged or unfinished run scoring
:data:`~optstudy.sweep.DIVERGED_OBJECTIVE`), so a diverging trial counts against tuneability.
A grid has no order: its best-so-far after k trials is the exact expectation over every order
of the grid (every k-subset equally likely). An Optuna sampler's trials have one: their
best-so-far follows the trials' order (their Hydra job numbers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from optstudy.artifacts import COMPLETED, DIVERGED
from optstudy.study.collect import CONFIG_PREFIX
from optstudy.study.protocol import GRID
from optstudy.study.select import run_scores

OPTIMIZER_PREFIX = CONFIG_PREFIX + "optimizer."


def searched_arguments(runs: pd.DataFrame) -> list[str]:
    """The ``cfg.optimizer.*`` columns whose value varies among ``runs`` (one configuration's
    tuning runs on one task): the searched arguments; ``cfg.optimizer.lr`` when none varies."""
    columns = [c for c in runs.columns if c.startswith(OPTIMIZER_PREFIX)]
    varying = [c for c in columns if runs[c].nunique(dropna=False) > 1]
    return varying or [OPTIMIZER_PREFIX + "lr"]


def _format(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def setting_label(row: pd.Series, arguments: Sequence[str]) -> str:
    """``lr=0.01 momentum=0.9``: the values of ``arguments`` (``cfg.optimizer.*`` columns) in
    ``row``."""
    return " ".join(f"{a.removeprefix(OPTIMIZER_PREFIX)}={_format(row[a])}" for a in arguments)


def setting_scores(tune_runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per task, configuration and tried setting of ``tune_runs`` (prepared runs of
    the tune phase): ``setting`` (its label), ``lr``, ``score`` (mean selection score over its
    runs), ``runs``, ``trained`` (all its runs completed: none diverged or failed),
    ``diverged`` (runs) and ``trial`` (its first Hydra job number: the trial order)."""
    runs = tune_runs.assign(score=run_scores(tune_runs, metric))
    rows = []
    for (task, config), group in runs.groupby(["task", "configuration"], sort=True):
        arguments = searched_arguments(group)
        for _, setting in group.groupby(arguments, dropna=False, sort=True):
            first = setting.iloc[0]
            rows.append(
                {
                    "task": task,
                    "configuration": config,
                    "setting": setting_label(first, arguments),
                    "lr": first["lr"],
                    "score": setting["score"].mean(),
                    "runs": len(setting),
                    "trained": bool((setting["status"] == COMPLETED).all()),
                    "diverged": int((setting["status"] == DIVERGED).sum()),
                    "trial": setting["job"].min(),
                }
            )
    return pd.DataFrame(rows)


def expected_best(scores: Sequence[float], k: int) -> float:
    """The expected best of ``k`` of ``scores`` drawn without replacement in a random order:
    with the n scores sorted ascending, the i-th (from 1) is the best of the k with probability
    C(i − 1, k − 1) / C(n, k); k ≥ n gives the best of all."""
    ordered = np.sort(np.asarray(scores, dtype=float))
    n, k = len(ordered), min(k, len(ordered))
    weights = np.array([math.comb(i - 1, k - 1) for i in range(1, n + 1)], dtype=float)
    return float(weights @ ordered / math.comb(n, k))


def best_so_far(scores_in_order: Sequence[float], k: int) -> float:
    """The best of the first ``k`` scores (all of them when k exceeds their number)."""
    return float(np.max(np.asarray(scores_in_order, dtype=float)[:k]))


def budgets(trials: int) -> list[int]:
    """The numbers of trials a table shows: 1 to 4, then doubling, and ``trials`` itself."""
    shown = [k for k in (1, 2, 3, 4) if k <= trials]
    k = 8
    while k < trials:
        shown.append(k)
        k *= 2
    return sorted({*shown, trials})


def tuneability(settings: pd.DataFrame, method: str) -> pd.DataFrame:
    """One row per task and configuration of ``settings`` (from :func:`setting_scores`):
    ``tried`` (settings), ``trained`` (how many trained without diverging), ``trained_share``,
    ``best`` (best score) and ``after_<k>`` (the best score after k trials, k from
    :func:`budgets` of the most settings any configuration tried; for a ``grid`` ``method`` the
    expectation over random orders, else in trial order)."""
    ks = budgets(int(settings.groupby(["task", "configuration"]).size().max()))
    rows = []
    for (task, config), group in settings.groupby(["task", "configuration"], sort=True):
        scores = group["score"].to_numpy()
        ordered = group.sort_values("trial", kind="stable")["score"].to_numpy()
        row = {
            "task": task,
            "configuration": config,
            "tried": len(group),
            "trained": int(group["trained"].sum()),
            "trained_share": float(group["trained"].mean()),
            "best": float(scores.max()),
        }
        for k in ks:
            row[f"after_{k}"] = (
                expected_best(scores, k) if method == GRID else best_so_far(ordered, k)
            )
        rows.append(row)
    return pd.DataFrame(rows)
