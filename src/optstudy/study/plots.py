"""The study's figures (matplotlib's object API, no pyplot state, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from optstudy.artifacts import WHOLE_MODEL
from optstudy.atomic import atomic_write
from optstudy.study.collect import load_lr_steps
from optstudy.study.profile import profile_scores, rho

# Line styles cycled so that configurations with equal values stay visible.
LINE_STYLES = ("-", "--", ":", "-.")
CURVES = (
    ("train_loss", "train loss"),
    ("val_loss", "validation loss"),
    ("train_acc", "train accuracy"),
    ("val_acc", "validation accuracy"),
)

# Whole-model diagnostics plotted per task: (column of diagnostics.csv, title, y scale).
DIAGNOSTICS = (
    ("eff_step_median", "effective step size: median, 10–90% band", "log"),
    ("grad_norm", "gradient norm", "log"),
    ("update_ratio", "update norm / parameter norm", "log"),
    ("distance_from_init", "distance from the initial parameters", "linear"),
)


def save_png(figure: Figure, path: Path) -> Path:
    """Write ``figure`` to ``path`` as a PNG, atomically."""
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110))
    return path


def _axes_per_task(tasks: list[str], title: str, height: float = 4.0) -> tuple[Figure, list]:
    figure = Figure(figsize=(7 * len(tasks), height), layout="constrained")
    axes = figure.subplots(1, len(tasks), squeeze=False)[0]
    for ax, task in zip(axes, tasks, strict=True):
        ax.set_title(task)
        ax.grid(alpha=0.3)
    figure.suptitle(title)
    return figure, list(axes)


def learning_curves(runs: pd.DataFrame, histories: pd.DataFrame, configs: list[str]) -> Figure:
    """Train/validation loss and accuracy against epochs of one task's ``configs``: the mean
    over completed seeds, with a ±1 std band."""
    figure = Figure(figsize=(11, 7.5), layout="constrained")
    axes = figure.subplots(2, 2).ravel()
    completed = runs[(runs["status"] == "completed") & runs["config"].isin(configs)]
    history = histories.merge(completed[["run", "config"]], on="run")
    history["epochs"] = history["epoch"] + 1
    for config in configs:
        by_epoch = history[history["config"] == config].groupby("epochs")
        for ax, (column, _) in zip(axes, CURVES, strict=True):
            mean, std = by_epoch[column].mean(), by_epoch[column].std().fillna(0.0)
            (line,) = ax.plot(mean.index, mean, marker=".", label=config)
            ax.fill_between(mean.index, mean - std, mean + std, alpha=0.2, color=line.get_color())
    for ax, (_, title) in zip(axes, CURVES, strict=True):
        ax.set(title=title, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    figure.suptitle(f"{runs['task'].iloc[0]}: mean ± std over seeds")
    return figure


def optimizer_diagnostics(
    runs: pd.DataFrame, diagnostics: pd.DataFrame, configs: list[str]
) -> Figure:
    """The whole model's effective step size (median with its 10–90% band), gradient norm,
    update/parameter norm ratio and distance from the initial parameters against optimizer
    steps, one line per configuration of ``configs`` (one task's): the mean over completed
    seeds."""
    figure = Figure(figsize=(11, 7.5), layout="constrained")
    axes = figure.subplots(2, 2).ravel()
    completed = runs[(runs["status"] == "completed") & runs["config"].isin(configs)]
    rows = diagnostics[diagnostics["layer"] == WHOLE_MODEL].merge(
        completed[["run", "config"]], on="run"
    )
    for number, config in enumerate(configs):
        by_step = rows[rows["config"] == config].groupby("step")
        if not by_step.ngroups:  # its runs did not measure (diagnostics off, or older runs)
            continue
        style = LINE_STYLES[number % len(LINE_STYLES)]
        for ax, (column, _, _) in zip(axes, DIAGNOSTICS, strict=True):
            mean = by_step[column].mean()
            (line,) = ax.plot(mean.index, mean, marker=".", linestyle=style, label=config)
            if column == "eff_step_median":
                low, high = by_step["eff_step_p10"].mean(), by_step["eff_step_p90"].mean()
                ax.fill_between(mean.index, low, high, alpha=0.15, color=line.get_color())
    for ax, (_, title, scale) in zip(axes, DIAGNOSTICS, strict=True):
        ax.set(title=title, xlabel="optimizer step", yscale=scale)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize="small")
    figure.suptitle(f"{runs['task'].iloc[0]}: optimizer diagnostics, whole model, mean over seeds")
    return figure


def lr_schedules(runs: pd.DataFrame, configs: list[str]) -> Figure:
    """The lr against optimizer steps of one run (the first seed) of each of ``configs``."""
    figure = Figure(figsize=(7, 4), layout="constrained")
    ax = figure.subplots()
    for number, config in enumerate(configs):
        run = runs[runs["config"] == config].sort_values("seed")["run"].iloc[0]
        steps = load_lr_steps(Path(run))
        style = LINE_STYLES[number % len(LINE_STYLES)]
        ax.step(steps["step"], steps["lr"], where="post", linestyle=style, label=config)
    ax.set(xlabel="optimizer step", ylabel="lr", yscale="log", title="lr over training")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return figure


def lr_sensitivity(summary: pd.DataFrame, metric: str) -> Figure:
    """Mean ``metric`` (± std over seeds) against the lr, log x, one line per lr-group (the
    optimizer and whatever else varies), one panel per task; an lr without any completed run
    (all diverged or failed) is a × at the bottom."""
    tasks = summary.groupby("task", sort=False)
    figure, axes = _axes_per_task(
        list(dict.fromkeys(summary["task"])), f"lr sensitivity: {metric} (×: no completed run)"
    )
    for ax, (_, task_rows) in zip(axes, tasks, strict=True):
        for group, rows in task_rows.sort_values("lr").groupby("lr_group", sort=False):
            bars = ax.errorbar(
                rows["lr"],
                rows[f"{metric}_mean"],
                yerr=rows[f"{metric}_std"],
                marker="o",
                capsize=3,
                label=group,
            )
            failed = rows[rows["seeds"] == 0]["lr"]  # no completed run: marked at the bottom
            ax.scatter(
                failed,
                [0.03] * len(failed),
                marker="x",
                color=bars.lines[0].get_color(),
                transform=ax.get_xaxis_transform(),
            )
        ax.set(xscale="log", xlabel="lr", ylabel=metric)
        ax.legend(fontsize="small")
    return figure


def time_to_target_bars(summary: pd.DataFrame) -> Figure:
    """Epochs to reach the task's target validation accuracy (mean ± std over the seeds that
    reached it) per configuration of ``summary``; configurations that never did are marked."""
    tasks = summary.groupby("task", sort=False)
    height = 1.5 + 0.4 * tasks.size().max()
    figure, axes = _axes_per_task(
        list(dict.fromkeys(summary["task"])), "epochs to the target validation accuracy", height
    )
    for ax, (_, rows) in zip(axes, tasks, strict=True):
        y = np.arange(len(rows))
        means = rows["epochs_to_target_mean"].fillna(0.0)
        stds = rows["epochs_to_target_std"].fillna(0.0)
        ax.barh(y, means, xerr=stds, capsize=3, color="tab:blue", alpha=0.8)
        for i, row in enumerate(rows.itertuples()):
            note = f"{row.reached_target}/{row.runs} reached"
            ax.annotate(
                note,
                (means.iloc[i] + stds.iloc[i], i),
                xytext=(6, 0),
                textcoords="offset points",
                va="center",
                fontsize="small",
            )
        ax.set_yticks(y, rows["config"])
        ax.invert_yaxis()
        ax.set_xlim(0, 1.35 * max(1.0, (means + stds).max()))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel=f"epochs (target val acc {rows['target_acc'].iloc[0]:.3f})")
    return figure


def tuning_sensitivity(settings: pd.DataFrame, selected: pd.Series, metric: str) -> Figure:
    """The tuning score (``metric`` on validation, mean over the tuning seeds) against the lr,
    log x, one line per configuration, one panel per task, from the tuning runs' ``settings``
    (see ``tuneability.setting_scores``; with other searched arguments, the best of them at
    each lr). A setting whose runs diverged or failed is a × at the bottom; the lr its final
    runs use (``selected``: (task, configuration) → lr) is a star."""
    tasks = list(dict.fromkeys(settings["task"]))
    figure, axes = _axes_per_task(
        tasks, f"lr sensitivity in tuning: {metric} (×: diverged, ★: selected)"
    )
    for ax, task in zip(axes, tasks, strict=True):
        rows = settings[settings["task"] == task]
        for config, group in rows.groupby("configuration", sort=True):
            trained = group[group["trained"]].groupby("lr")["score"].max()
            (line,) = ax.plot(trained.index, trained, marker="o", label=config)
            failed = sorted(set(group["lr"]) - set(trained.index))
            ax.scatter(failed, [0.03] * len(failed), marker="x", color=line.get_color(),
                       transform=ax.get_xaxis_transform())  # fmt: skip
            lr = selected.get((task, config))
            if lr is not None and lr in trained.index:
                ax.scatter([lr], [trained[lr]], marker="*", s=180, color=line.get_color(),
                           edgecolor="black", zorder=3)  # fmt: skip
        ax.set(xscale="log", xlabel="lr", ylabel=metric)
        ax.legend(fontsize="small")
    return figure


def performance_profile(ratios: pd.DataFrame, r_max: float, cost: str) -> Figure:
    """AlgoPerf-style performance profile (see ``study.profile``): ρ(τ), the share of tasks a
    configuration (column of ``ratios``) reached the target within τ × the fastest's ``cost``,
    for τ from 1 up to ``r_max`` (excluded: there a configuration that never reached the
    target would count as reaching it); the legend gives each one's score."""
    taus = np.linspace(1.0, r_max, 301)[:-1]
    shares = rho(ratios, taus)
    scores = profile_scores(ratios, r_max)
    figure = Figure(figsize=(7, 4), layout="constrained")
    ax = figure.subplots()
    for number, config in enumerate(scores.index):
        style = LINE_STYLES[number % len(LINE_STYLES)]
        label = f"{config} (score {scores[config]:.2f})"
        ax.step(taus, shares[config], where="post", linestyle=style, label=label)
    ax.set(xlabel=f"τ ({cost} to target / fastest)", ylabel="share of tasks", xlim=(1.0, r_max))
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"performance profile over {len(ratios)} tasks (r_max = {r_max:g})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return figure
