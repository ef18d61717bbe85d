"""Write a study's report: summary.csv, runs.csv, PNG plots, report.md and a self-contained
report.html (tables and base64 plots inline)."""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from optstudy.atomic import atomic_write, atomic_write_json, atomic_write_text
from optstudy.study import plots
from optstudy.study.aggregate import SELECTION_METRIC, prepare_runs, summarize
from optstudy.study.collect import Study, load_study
from optstudy.study.compare import compare_to_best, reading

# Name (before any task number) of the optimizer-diagnostics plots, which get a section.
DIAGNOSTICS_PLOT = "optimizer_diagnostics"
DIAGNOSTICS_TEXT = (
    "The whole model's values at the steps each run measured (its diagnostics.csv has them per "
    "layer too), mean over completed seeds. The effective step size is what an update moved a "
    "weight per unit of the direction it followed (the gradient; for Adam-type optimizers the "
    "bias-corrected moving average of gradients), its median over all weights with the 10–90% "
    "band; for SGD it is the lr. A step size that keeps shrinking while the loss stops "
    "improving is AdaGrad's stall."
)
# Metrics the reading may compare on (higher is better).
READING_METRICS = ("test_acc", "final_val_acc", "best_val_acc")
# Summary columns shown in the report as "mean ± std [95% interval]", with their titles.
SHOWN_STATS = (
    ("best_val_acc", "best val acc"),
    ("final_val_acc", "final val acc"),
    ("test_acc", "test acc"),
    ("final_val_loss", "final val loss"),
    ("epochs_to_target", "epochs to target"),
    ("train_time_s", "train s"),
)


def _mean_std_ci(row: pd.Series, metric: str) -> str:
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    if math.isnan(mean):
        return "–"
    digits = 1 if metric in ("epochs_to_target", "train_time_s") else 4
    text = f"{mean:.{digits}f}"
    if not math.isnan(std):
        low, high = row[f"{metric}_ci95_low"], row[f"{metric}_ci95_high"]
        text += f" ± {std:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
    return text


def display_table(summary: pd.DataFrame) -> pd.DataFrame:
    """``summary`` as the report shows it: task, configuration, seeds/runs, diverged, and
    "mean ± std [95% interval]" of the main metrics."""
    table = pd.DataFrame(
        {
            "task": summary["task"],
            "config": summary["config"],
            "seeds": summary["seeds"].astype(str) + "/" + summary["runs"].astype(str),
            "diverged": summary["diverged"],
        }
    )
    for metric, title in SHOWN_STATS:
        table[title] = summary.apply(_mean_std_ci, axis=1, metric=metric)
    table["reached target"] = (
        summary["reached_target"].astype(str) + "/" + summary["runs"].astype(str)
    )
    return table


def best_lr_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The best lr of each lr-group whose lr was swept (empty when none was)."""
    best = summary[summary["best_lr"] & (summary["lrs_tried"] > 1)]
    return pd.DataFrame(
        {
            "task": best["task"],
            "optimizer setting": best["lr_group"],
            "lrs tried": best["lrs_tried"],
            "best lr": best["lr"],
            f"{SELECTION_METRIC} (mean)": best[f"{SELECTION_METRIC}_mean"].round(4),
        }
    )


def make_figures(
    study: Study, runs: pd.DataFrame, summary: pd.DataFrame, metric: str
) -> dict[str, Figure]:
    """Learning curves, optimizer diagnostics (where the runs have them) and lr schedules per
    task (the best lr of each lr-group), lr sensitivity, time-to-target bars, and a performance
    profile when there are several tasks."""
    items: dict[str, Figure] = {}
    tasks = summary.groupby("task", sort=False)
    for number, (task, rows) in enumerate(tasks, start=1):
        shown = rows[rows["best_lr"]]["config"].tolist()
        suffix = f"-{number}" if tasks.ngroups > 1 else ""
        if shown:
            task_runs = runs[runs["task"] == task]
            items[f"learning_curves{suffix}"] = plots.learning_curves(
                task_runs, study.histories, shown
            )
            if study.diagnostics["run"].isin(task_runs["run"]).any():
                items[f"{DIAGNOSTICS_PLOT}{suffix}"] = plots.optimizer_diagnostics(
                    task_runs, study.diagnostics, shown
                )
        items[f"lr_schedule{suffix}"] = plots.lr_schedules(
            runs[runs["task"] == task], rows["config"].tolist()
        )
    items["lr_sensitivity"] = plots.lr_sensitivity(summary, metric)
    items["time_to_target"] = plots.time_to_target_bars(summary)
    if tasks.ngroups > 1:
        items["performance_profile"] = plots.performance_profile(summary)
    return items


def _markdown(blocks: Iterable[tuple[str, object]]) -> str:
    parts = []
    for kind, content in blocks:
        if kind == "h1":
            parts.append(f"# {content}")
        elif kind == "h2":
            parts.append(f"## {content}")
        elif kind == "p":
            parts.append(str(content))
        elif kind == "table":
            parts.append(content.to_markdown(index=False))  # type: ignore[union-attr]
        elif kind == "img":
            parts.append(f"![{content.stem}]({content.name})")  # type: ignore[union-attr]
    return "\n\n".join(parts) + "\n"


def _html(blocks: Iterable[tuple[str, object]]) -> str:
    parts = []
    for kind, content in blocks:
        if kind in ("h1", "h2"):
            parts.append(f"<{kind}>{html.escape(str(content))}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(str(content))}</p>")
        elif kind == "table":
            parts.append(content.to_html(index=False, border=0, na_rep="–"))  # type: ignore[union-attr]
        elif kind == "img":
            data = base64.b64encode(content.read_bytes()).decode()  # type: ignore[union-attr]
            alt = html.escape(content.stem)  # type: ignore[union-attr]
            parts.append(f'<img alt="{alt}" src="data:image/png;base64,{data}">')
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:auto}"
        "table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;"
        "border-bottom:1px solid #ddd;text-align:left}img{max-width:100%}"
    )
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Study report</title>'
        f"<style>{style}</style></head><body>\n{body}\n</body></html>\n"
    )


# The folder of DVC metrics files: one small JSON file per configuration, so that
# `dvc metrics show` prints one row per configuration (one file with every configuration
# would be one row as wide as configurations × columns).
METRICS_DIR = "metrics"
# Each configuration's metrics file: its name for each of these summary.csv columns (the
# accuracies are means over the configuration's seeds; short names keep the table narrow).
METRIC_COLUMNS = {
    "seeds": "seeds",
    "diverged": "diverged",
    "best_val_acc_mean": "best_val_acc",
    "test_acc_mean": "test_acc",
}


def metrics_files(summary: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """The main summary numbers per configuration, keyed by a file name made of
    ``<data>/<model>/<config>`` (what is not a letter, digit, dot or dash becomes ``_``)."""
    return {
        re.sub(r"[^\w.-]+", "_", f"{row['task']}/{row['config']}") + ".json": {
            name: None if pd.isna(row[column]) else float(row[column])
            for column, name in METRIC_COLUMNS.items()
        }
        for _, row in summary.iterrows()
    }


def write_metrics(summary: pd.DataFrame, folder: Path) -> list[Path]:
    """Write :func:`metrics_files` into ``folder``, replacing the files of an earlier report."""
    for old in folder.glob("*.json"):
        old.unlink()
    written = []
    for name, numbers in metrics_files(summary).items():
        atomic_write_json(folder / name, numbers)
        written.append(folder / name)
    return written


def write_report(
    paths: Iterable[Path],
    out_dir: Path,
    metric: str = "test_acc",
    target: float | None = None,
    target_fraction: float = 0.95,
) -> list[Path]:
    """Collect the run directories under ``paths`` and write the report into ``out_dir``;
    return the files written. ``metric`` is what the reading compares; ``target`` /
    ``target_fraction`` set the time-to-target accuracy (see ``aggregate.task_targets``)."""
    paths = [Path(p) for p in paths]
    out_dir = Path(out_dir)
    study = load_study(paths)
    runs = prepare_runs(study, target, target_fraction)
    summary = summarize(runs)
    comparison = compare_to_best(summary, runs, metric)
    written = []
    for name, frame in (("summary", summary), ("runs", runs), ("comparison", comparison)):
        path = out_dir / f"{name}.csv"
        atomic_write(path, lambda tmp, frame=frame: frame.to_csv(tmp, index=False))
        written.append(path)
    written += write_metrics(summary, out_dir / METRICS_DIR)
    images = [
        plots.save_png(figure, out_dir / f"{stem}.png")
        for stem, figure in make_figures(study, runs, summary, metric).items()
    ]
    written += images
    incomplete = runs[runs["status"] == "incomplete"]
    blocks: list[tuple[str, object]] = [
        ("h1", "Study report"),
        ("p", f"{len(runs)} run directories from {', '.join(map(str, paths))}: "
              f"{(runs['status'] == 'completed').sum()} completed, "
              f"{(runs['status'] == 'diverged').sum()} diverged, {len(incomplete)} incomplete."),
        ("h2", "Reading"),
        *[("p", sentence) for sentence in reading(comparison, summary, metric)],
        ("h2", "Summary (mean ± std over seeds [95% t-interval of the mean])"),
        ("p", "Diverged and incomplete runs are counted, never averaged. Epochs to target: "
              "epochs until the validation accuracy first reached the target, over the seeds "
              "that reached it. Full numbers: summary.csv."),
        ("table", display_table(summary)),
    ]  # fmt: skip
    lr_table = best_lr_table(summary)
    if not lr_table.empty:
        blocks += [("h2", "Best lr per optimizer (by mean best_val_acc)"), ("table", lr_table)]
    blocks += [("h2", f"Each configuration against its task's best ({metric})")]
    blocks += [("table", comparison.round(4))]
    if not incomplete.empty:
        blocks += [("h2", "Incomplete runs (no metrics.json)")]
        blocks += [("table", incomplete[["run", "config"]])]
    diagnostics = [image for image in images if image.stem.startswith(DIAGNOSTICS_PLOT)]
    blocks += [("h2", "Plots"), *[("img", i) for i in images if i not in diagnostics]]
    if diagnostics:
        blocks += [("h2", "Optimizer diagnostics"), ("p", DIAGNOSTICS_TEXT)]
        blocks += [("img", image) for image in diagnostics]
    for name, render in (("report.md", _markdown), ("report.html", _html)):
        atomic_write_text(out_dir / name, render(blocks))
        written.append(out_dir / name)
    return written
