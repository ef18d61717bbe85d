"""The tables and reading of a tuned study (runs with a ``study.phase``): per task the ranking
of the tuned configurations next to the one-shot ranking at library defaults, the
DeepOBS-style table (performance, speed, tuneability) and the performance profile's scores.

A configuration is ``<optimizer>-<scheduler>``; its selected setting is what its final runs
trained with (the report reads no ``selection.json``: the final runs' configs are what was
run), its tuning runs give its lr sensitivity and tuneability.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf
from scipy import stats

from optstudy.artifacts import CONFIG_FILE
from optstudy.errors import ConfigError
from optstudy.study.aggregate import summarize
from optstudy.study.compare import VERDICTS, compare_to_best
from optstudy.study.profile import R_MAX, performance_ratios, time_costs
from optstudy.study.protocol import GRID, Protocol, Tuning, load_protocol
from optstudy.study.tuneability import searched_arguments, setting_label

# What each phase's ranking is called in the report.
PHASE_TITLES = {"final": "tuned", "defaults": "one-shot (library defaults)"}


def is_tuned(runs: pd.DataFrame) -> bool:
    """Whether ``runs`` hold a tuned study's runs (any with a phase)."""
    return bool(runs["phase"].notna().any())


def study_protocol(runs: pd.DataFrame) -> Protocol:
    """The protocol of the tuned study whose runs ``runs`` hold, from one run's config;
    :class:`ConfigError` when they come from several tuned studies."""
    names = sorted(set(runs.loc[runs["phase"].notna(), "study"].dropna()))
    if len(names) > 1:
        raise ConfigError(f"one tuned study per report, these runs come from {', '.join(names)}")
    run = runs.loc[runs["phase"].notna(), "run"].iloc[0]
    return load_protocol(OmegaConf.load(Path(run) / CONFIG_FILE).study)


def phase_view(runs: pd.DataFrame, phase: str) -> pd.DataFrame:
    """The runs of ``phase``, each labelled by its configuration (``config`` and
    ``lr_group``)."""
    chosen = runs[runs["phase"] == phase]
    return chosen.assign(config=chosen["configuration"], lr_group=chosen["configuration"])


@dataclass(frozen=True)
class Ranking:
    """One phase's configurations per task: summary (see ``aggregate.summarize``) and
    comparison with the best (see ``compare.compare_to_best``), with ``rank`` (1: best mean)."""

    summary: pd.DataFrame
    comparison: pd.DataFrame


def rank(view: pd.DataFrame, metric: str) -> Ranking | None:
    """The ranking of a :func:`phase_view` by ``metric`` (None without runs)."""
    if view.empty:
        return None
    summary = summarize(view)
    comparison = compare_to_best(summary, view, metric)
    comparison["rank"] = comparison.groupby("task")["mean"].rank(ascending=False, method="min")
    return Ranking(summary, comparison)


def selected_settings(final: pd.DataFrame, tune: pd.DataFrame) -> pd.Series:
    """Per (task, configuration): the setting its final runs trained with, as the values of
    the arguments its tuning runs searched (the lr when there are none)."""
    labels = {}
    for key, group in final.groupby(["task", "configuration"], sort=True):
        tuned = tune[(tune["task"] == key[0]) & (tune["configuration"] == key[1])]
        arguments = searched_arguments(tuned if not tuned.empty else group)
        labels[key] = setting_label(group.iloc[0], arguments)
    return pd.Series(labels, dtype=object)


def _mean_ci(row: pd.Series, metric: str) -> str:
    mean, low, high = (row[f"{metric}_{s}"] for s in ("mean", "ci95_low", "ci95_high"))
    if math.isnan(mean):
        return "–"
    return f"{mean:.4f}" + ("" if math.isnan(low) else f" [{low:.4f}, {high:.4f}]")


def _phase_columns(ranking: Ranking, metric: str, title: str) -> pd.DataFrame:
    """``title``'s columns of the side-by-side ranking: metric with CI, rank, verdict."""
    summary = ranking.summary.set_index(["task", "config"])
    comparison = ranking.comparison.set_index(["task", "config"])
    verdict = comparison["verdict"] + comparison["p_holm"].map(
        lambda p: "" if math.isnan(p) else f" (p={p:.3f})"
    )
    return pd.DataFrame(
        {
            f"{title} {metric} [95% CI]": summary.apply(_mean_ci, axis=1, metric=metric),
            f"{title} seeds": summary["seeds"],
            f"{title} rank": comparison["rank"],
            f"{title} verdict (Holm p)": verdict,
        }
    )


def ranking_table(
    final: Ranking, defaults: Ranking | None, settings: pd.Series, metric: str
) -> pd.DataFrame:
    """Per task, the tuned configurations best first: selected setting, tuned metric [CI],
    rank and verdict against the best, and the same at library defaults next to it."""
    table = _phase_columns(final, metric, PHASE_TITLES["final"])
    table.insert(0, "selected setting", settings.reindex(table.index))
    if defaults is not None:
        table = table.join(_phase_columns(defaults, metric, "one-shot"), how="outer")
    table = table.reset_index().rename(columns={"config": "configuration"})
    return table.sort_values(["task", f"{PHASE_TITLES['final']} rank"], kind="stable")


def speed_table(final: pd.DataFrame) -> pd.DataFrame:
    """Per task and configuration: median steps and seconds to the validation target over
    its final seeds (∞: most seeds never reached it) and how many seeds reached it."""
    steps = time_costs(final, "configuration", "steps_to_target").stack()
    seconds = time_costs(final, "configuration", "seconds_to_target").stack()
    reached = final.groupby(["task", "configuration"]).agg(
        reached=("steps_to_target", "count"), runs=("run", "count")
    )
    return pd.DataFrame({"steps to target": steps, "seconds to target": seconds}).join(reached)


def deepobs_table(
    ranking: Ranking, final: pd.DataFrame, tuneability: pd.DataFrame | None, metric: str
) -> pd.DataFrame:
    """DeepOBS's three views per task and configuration: performance (the final ``metric``
    with its 95% CI), speed (see :func:`speed_table`) and tuneability (settings tried, the
    share that trained without diverging, best-so-far validation after k trials)."""
    summary = ranking.summary.set_index(["task", "config"]).rename_axis(["task", "configuration"])
    table = pd.DataFrame({f"{metric} [95% CI]": summary.apply(_mean_ci, axis=1, metric=metric)})
    speed = speed_table(final)
    table = table.join(speed[["steps to target", "seconds to target"]].round(1))
    table["reached target"] = speed["reached"].astype(str) + "/" + speed["runs"].astype(str)
    if tuneability is not None:
        tune = tuneability.set_index(["task", "configuration"])
        table["trained / tried"] = tune["trained"].astype(str) + "/" + tune["tried"].astype(str)
        after = [c for c in tune if c.startswith("after_")]
        table = table.join(
            tune[after].round(4).rename(columns=lambda c: f"best after {c.removeprefix('after_')}")
        )
    return table.reset_index()


def profile(final: pd.DataFrame, cost: str) -> pd.DataFrame:
    """The performance ratios (tasks × configurations) of the final runs by ``cost`` (a
    time-to-target column)."""
    return performance_ratios(time_costs(final, "configuration", cost), R_MAX)


def _rank_agreement(final: Ranking, defaults: Ranking | None, task: str) -> str:
    if defaults is None:
        return ""
    ranks = [
        r.comparison[r.comparison["task"] == task].set_index("config")["rank"]
        for r in (final, defaults)
    ]
    both = pd.concat(ranks, axis=1, join="inner").dropna()
    best = defaults.comparison[
        (defaults.comparison["task"] == task) & (defaults.comparison["verdict"] == VERDICTS[0])
    ]["config"]
    text = f" At library defaults the best was {best.iloc[0]}." if len(best) else ""
    if len(both) > 2:
        tau = stats.kendalltau(both.iloc[:, 0], both.iloc[:, 1]).statistic
        text += f" Kendall's τ between the tuned and one-shot rankings: {tau:.2f}."
    return text


def reading(
    final: Ranking, defaults: Ranking | None, settings: pd.Series, metric: str
) -> list[str]:
    """The answer in sentences, per task: the best tuned configuration, which are within noise
    of it and which worse (Holm-corrected), and how the one-shot ranking differed."""
    sentences = []
    for task, group in final.comparison.groupby("task", sort=False):
        best = group[group["verdict"] == VERDICTS[0]]
        if best.empty:
            sentences.append(f"{task}: no tuned configuration completed a run.")
            continue
        b = best.iloc[0]
        setting = settings.get((task, b["config"]), "")
        text = f"{task}: best tuned is {b['config']} ({setting}), {metric} {b['mean']:.4f}"
        text += f" over {b['seeds']} seeds."
        noise = group[group["verdict"] == VERDICTS[1]]["config"].tolist()
        worse = group[group["verdict"] == VERDICTS[2]]["config"].tolist()
        text += f" Within noise of it: {', '.join(noise) or 'none'}."
        text += f" Worse beyond noise: {', '.join(worse) or 'none'}"
        text += f" (Holm over {b['comparisons']} comparisons)."
        sentences.append(text + _rank_agreement(final, defaults, task))
    return sentences


def method_text(protocol: Protocol | None) -> str:
    """How the study was tuned and tested, in one paragraph."""
    tuning = protocol.tuning if protocol is not None else Tuning()
    how = (
        f"a log grid, {tuning.points_per_decade} per decade"
        if tuning.method == GRID
        else f"{tuning.trials} trials of Optuna's {tuning.method} sampler"
    )
    final = f"on the fresh seeds {list(protocol.final_seeds)}" if protocol else "on fresh seeds"
    return (
        f"Each configuration was tuned on each task over its search space ({how}, tuning seeds "
        f"{list(tuning.seeds)}), its setting selected on validation ({tuning.metric}), then "
        f"trained {final}; the one-shot runs use the library defaults on the same seeds. "
        "Intervals are 95% Student-t intervals over the seeds; each configuration is compared "
        "with its task's best by Welch's t-test, Holm-corrected over that task's comparisons; "
        "diverged runs are counted, never averaged."
    )
