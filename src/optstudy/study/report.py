"""Write a study's report: CSV tables, summary.json, metrics/ (DVC's metrics), PNG plots,
report.md and a self-contained report.html (tables and base64 plots inline).

A tuned study (runs with a ``study.phase``) gets the answer first: per task the ranking of
the tuned configurations next to the one-shot ranking at library defaults, the DeepOBS-style
table, lr sensitivity from the tuning runs and the performance profile over tasks (see
:mod:`optstudy.study.tuned`). A plain sweep gets its summary table and reading. Both end with
the verdicts on the write-ups' claims (:mod:`optstudy.study.claims`) and the plots.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from optstudy.atomic import atomic_write, atomic_write_json, atomic_write_text
from optstudy.cli import project_root
from optstudy.study import plots, tuned
from optstudy.study.aggregate import SELECTION_METRIC, prepare_runs, summarize
from optstudy.study.claims import CLAIMS_DIR, claims_json, claims_table, evaluate, load_claims
from optstudy.study.collect import Study, load_study
from optstudy.study.compare import compare_to_best, reading
from optstudy.study.profile import COSTS, R_MAX, performance_ratios, profile_scores, time_costs
from optstudy.study.protocol import GRID
from optstudy.study.render import Block, markdown, page
from optstudy.study.tuneability import setting_scores, tuneability

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


def _per_task_figures(
    study: Study, runs: pd.DataFrame, shown: Mapping[str, list[str]]
) -> dict[str, Figure]:
    """Learning curves, optimizer diagnostics (where the runs have them) and lr schedules of
    the ``shown`` configurations of each task."""
    items: dict[str, Figure] = {}
    for number, (task, configs) in enumerate(shown.items(), start=1):
        suffix = f"-{number}" if len(shown) > 1 else ""
        task_runs = runs[runs["task"] == task]
        if configs:
            items[f"learning_curves{suffix}"] = plots.learning_curves(
                task_runs, study.histories, configs
            )
            if study.diagnostics["run"].isin(task_runs["run"]).any():
                items[f"{DIAGNOSTICS_PLOT}{suffix}"] = plots.optimizer_diagnostics(
                    task_runs, study.diagnostics, configs
                )
        items[f"lr_schedule{suffix}"] = plots.lr_schedules(
            task_runs, list(dict.fromkeys(task_runs["config"]))
        )
    return items


def make_figures(
    study: Study, runs: pd.DataFrame, summary: pd.DataFrame, metric: str, cost: str = "steps"
) -> dict[str, Figure]:
    """A plain sweep's figures: per task the learning curves and diagnostics of the best lr
    of each lr-group and the lr schedules, then lr sensitivity, time-to-target bars, and a
    performance profile of each lr-group at its best lr when there are several tasks."""
    best = summary[summary["best_lr"]]
    shown = {
        task: rows.loc[rows["best_lr"], "config"].tolist()
        for task, rows in summary.groupby("task", sort=False)
    }
    items = _per_task_figures(study, runs, shown)
    items["lr_sensitivity"] = plots.lr_sensitivity(summary, metric)
    items["time_to_target"] = plots.time_to_target_bars(summary)
    if len(shown) > 1:
        keys = best.set_index(["task", "config"]).index
        chosen = runs[runs.set_index(["task", "config"]).index.isin(keys)]
        ratios = performance_ratios(time_costs(chosen, "lr_group", COSTS[cost]), R_MAX)
        items["performance_profile"] = plots.performance_profile(ratios, R_MAX, cost)
    return items


# The CSV tables ``report --wandb`` sends (those the report wrote).
SENT_TABLES = ("claims", "ranking", "tuneability", "profile", "comparison", "summary")
# Columns of summary.csv that summary.json (a DVC metrics file) carries per configuration.
METRIC_COLUMNS = (
    "seeds", "diverged", "best_val_acc_mean", "best_val_acc_std", "final_val_acc_mean",
    "test_acc_mean", "test_acc_std", "final_train_loss_mean", "epochs_to_target_mean",
    "train_time_s_mean",
)  # fmt: skip


def _number(value: Any) -> float | None:
    return None if pd.isna(value) else float(value)


def summary_metrics(summary: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """The main summary numbers as nested JSON data, keyed ``<task>/<config>``."""
    return {
        f"{row['task']}/{row['config']}": {c: _number(row[c]) for c in METRIC_COLUMNS}
        for _, row in summary.iterrows()
    }


# The folder of DVC metrics files: one small JSON file per task and configuration, so that
# `dvc metrics show` prints one row each (summary.json, with every configuration, would be one
# row as wide as configurations × columns).
METRICS_DIR = "metrics"
# A plain sweep's metrics file: its name for each of these summary.csv columns (means over the
# configuration's seeds; short names keep the table narrow).
PLAIN_FILE_COLUMNS = {
    "seeds": "seeds",
    "diverged": "diverged",
    "best_val_acc_mean": "best_val_acc",
    "test_acc_mean": "test_acc",
}


# Longest metrics file name kept as it is; a longer one (a sweep's configuration label can run
# to hundreds of characters, file systems stop at 255 bytes) is cut, with a hash of the whole.
MAX_NAME = 120


def metrics_file_name(task: str, config: str) -> str:
    """A task's configuration's metrics file: ``<task>/<config>`` with whatever is not a letter,
    digit, dot or dash as ``_`` (cut to :data:`MAX_NAME` characters and a hash, if longer)."""
    name = re.sub(r"[^\w.-]+", "_", f"{task}/{config}")
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(f"{task}/{config}".encode()).hexdigest()[:12]
        name = f"{name[:MAX_NAME]}-{digest}"
    return name + ".json"


def plain_metrics_files(summary: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """A plain sweep's metrics files: the :data:`PLAIN_FILE_COLUMNS` of each summary row."""
    return {
        metrics_file_name(row["task"], row["config"]): {
            name: _number(row[column]) for column, name in PLAIN_FILE_COLUMNS.items()
        }
        for _, row in summary.iterrows()
    }


def tuned_metrics_files(
    final: Mapping[str, Mapping[str, Mapping[str, Any]]], metric: str
) -> dict[str, dict[str, Any]]:
    """A tuned study's metrics files: from its final ranking (summary.json's ``final``), each
    configuration's seeds, mean ``metric`` and rank on its task."""
    return {
        metrics_file_name(task, config): {
            "seeds": numbers["seeds"],
            metric: numbers["mean"],
            "rank": numbers["rank"],
        }
        for task, configs in final.items()
        for config, numbers in configs.items()
    }


def write_metrics_files(files: Mapping[str, Mapping[str, Any]], folder: Path) -> list[Path]:
    """Write ``files`` (name → numbers) into ``folder``, replacing an earlier report's files."""
    for old in folder.glob("*.json"):
        old.unlink()
    for name, numbers in files.items():
        atomic_write_json(folder / name, numbers)
    return [folder / name for name in files]


@dataclass
class Report:
    """What a report writes: CSV tables, figures, the blocks of report.md/html, the data
    of summary.json and the DVC metrics files (:data:`METRICS_DIR`)."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    metrics_files: dict[str, dict[str, Any]] = field(default_factory=dict)


def _plain(
    study: Study, runs: pd.DataFrame, summary: pd.DataFrame, metric: str, cost: str
) -> Report:
    """A plain sweep's report."""
    comparison = compare_to_best(summary, runs, metric)
    report = Report(
        tables={"comparison": comparison},
        figures=make_figures(study, runs, summary, metric, cost),
        metrics=summary_metrics(summary),
        metrics_files=plain_metrics_files(summary),
    )
    report.blocks = [
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
        report.blocks += [("h2", "Best lr per optimizer (by mean best_val_acc)")]
        report.blocks += [("table", lr_table)]
    report.blocks += [("h2", f"Each configuration against its task's best ({metric})")]
    report.blocks += [("table", comparison.round(4))]
    return report


def _phase_metrics(
    ranking: tuned.Ranking | None, settings: pd.Series, metric: str
) -> dict[str, dict[str, Any]]:
    """A phase's ranking as summary.json data: task → configuration → numbers and verdict."""
    if ranking is None:
        return {}
    summary = ranking.summary.set_index(["task", "config"])
    data: dict[str, dict[str, Any]] = {}
    for row in ranking.comparison.itertuples():
        stats = summary.loc[(row.task, row.config)]
        data.setdefault(row.task, {})[row.config] = {
            "seeds": int(row.seeds),
            "mean": _number(row.mean),
            "ci95_low": _number(stats[f"{metric}_ci95_low"]),
            "ci95_high": _number(stats[f"{metric}_ci95_high"]),
            "rank": _number(row.rank),
            "p_holm": _number(row.p_holm),
            "verdict": row.verdict,
            "setting": settings.get((row.task, row.config)),
        }
    return data


def _nested(table: pd.DataFrame, columns: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Rows of ``table`` (with task and configuration) as task → configuration → columns."""
    data: dict[str, dict[str, Any]] = {}
    for _, row in table.iterrows():
        data.setdefault(row["task"], {})[row["configuration"]] = {
            c: _number(row[c]) for c in columns
        }
    return data


PROFILE_TEXT = (
    "AlgoPerf-style: a configuration's cost on a task is the median over its final seeds of "
    "its {cost} to the task's validation target (a seed that never reached it counts as "
    "infinite); its ratio is that cost over the fastest configuration's, capped at r_max = "
    "{r_max:g}, and a configuration that never reaches the target gets r_max. ρ(τ) is the "
    "share of tasks with ratio ≤ τ; the score is the area under ρ over [1, r_max] divided by "
    "r_max − 1 (1: fastest on every task)."
)
TUNEABILITY_TEXT = (
    "Performance: the final {metric} over the final seeds. Speed: median over the final seeds "
    "of the optimizer steps and seconds until the validation accuracy first reached the "
    "task's target (∞: most seeds never did). Tuneability: settings that trained without "
    "diverging out of those tried, and the best tuning score (validation, diverged runs "
    "scoring 0) after k trials: {order}."
)


def _order_text(method: str) -> str:
    if method == GRID:
        return "for a grid, the exact expectation over every order of its points"
    return "in the order the sampler tried them"


def _tuned(study: Study, runs: pd.DataFrame, metric: str, cost: str) -> Report:
    """A tuned study's report (see :mod:`optstudy.study.tuned`)."""
    protocol = tuned.study_protocol(runs)
    report = Report(metrics={"study": protocol.name})
    final, defaults = tuned.phase_view(runs, "final"), tuned.phase_view(runs, "defaults")
    tune = tuned.phase_view(runs, "tune")
    settings = setting_scores(tune, protocol.tuning.metric) if not tune.empty else None
    tuning = tuneability(settings, protocol.tuning.method) if settings is not None else None
    if settings is not None:
        report.tables |= {"settings": settings, "tuneability": tuning}
        report.metrics["tuneability"] = _nested(
            tuning, tuning.columns.drop(["task", "configuration"])
        )
        selected = final.groupby(["task", "configuration"])["lr"].first()
        report.figures["lr_sensitivity"] = plots.tuning_sensitivity(
            settings, selected, protocol.tuning.metric
        )
    report.blocks = [("h2", "The answer"), ("p", tuned.method_text(protocol))]
    ranked = tuned.rank(final, metric)
    if ranked is None:
        report.blocks += [
            (
                "p",
                "No final runs yet: run the final phase (python -m "
                f"optstudy.study run study={protocol.name}).",
            )
        ]
        return report
    one_shot = tuned.rank(defaults, metric)
    chosen = tuned.selected_settings(final, tune)
    report.blocks += [("p", s) for s in tuned.reading(ranked, one_shot, chosen, metric)]
    report.metrics["final"] = _phase_metrics(ranked, chosen, metric)
    report.metrics["defaults"] = _phase_metrics(one_shot, chosen, metric)
    report.metrics_files = tuned_metrics_files(report.metrics["final"], metric)
    comparisons = [
        r.comparison.assign(phase=p)
        for p, r in (("final", ranked), ("defaults", one_shot))
        if r is not None
    ]
    report.tables["ranking"] = pd.concat(comparisons, ignore_index=True)
    report.blocks += [
        ("h2", f"Ranking per task: tuned vs one-shot ({metric})"),
        ("table", tuned.ranking_table(ranked, one_shot, chosen, metric)),
        ("h2", "Performance, speed and tuneability"),
        ("p", TUNEABILITY_TEXT.format(metric=metric, order=_order_text(protocol.tuning.method))),
        ("table", tuned.deepobs_table(ranked, final, tuning, metric)),
    ]
    report.figures["time_to_target"] = plots.time_to_target_bars(ranked.summary)
    if final["task"].nunique() > 1:
        ratios = tuned.profile(final, COSTS[cost])
        scores = profile_scores(ratios, R_MAX)
        report.tables["profile"] = ratios.reset_index()
        report.metrics["profile"] = {c: float(v) for c, v in scores.items()}
        report.figures["performance_profile"] = plots.performance_profile(ratios, R_MAX, cost)
        report.blocks += [
            ("h2", f"Performance profile over {len(ratios)} tasks"),
            ("p", PROFILE_TEXT.format(cost=cost, r_max=R_MAX)),
            ("table", scores.round(3).rename_axis("configuration").reset_index()),
        ]
    shown = {t: list(dict.fromkeys(r["config"])) for t, r in final.groupby("task", sort=True)}
    report.figures |= _per_task_figures(study, final, shown)
    return report


def _claims_blocks(table: pd.DataFrame, folder: Path) -> list[Block]:
    intro = (
        f"Each claim of SEEDS.md is a file of {folder}: its rule decides supported, refuted, "
        "inconclusive (with what would settle it) or not tested (with the command that would "
        "test it) from the collected runs. The tests of one claim are corrected together: "
        "p-values by Holm, intervals at 1 − 0.05/m for its m tasks or values."
    )
    if table.empty:
        return [("h2", "Claims"), ("p", f"No claim files in {folder}.")]
    return [("h2", "Claims"), ("p", intro), ("table", table)]


def write_report(
    paths: Iterable[Path],
    out_dir: Path,
    metric: str = "test_acc",
    target: float | None = None,
    target_fraction: float = 0.95,
    cost: str = "steps",
    claims_dir: Path | None = None,
) -> list[Path]:
    """Collect the run directories under ``paths`` and write the report into ``out_dir``;
    return the files written. ``metric`` is what rankings compare; ``target`` /
    ``target_fraction`` set the time-to-target accuracy (see ``aggregate.task_targets``);
    ``cost`` (steps or seconds) is the time of the performance profile; the claims come from
    ``claims_dir`` (default: the project's conf/claims)."""
    paths, out_dir = [Path(p) for p in paths], Path(out_dir)
    study = load_study(paths)
    runs = prepare_runs(study, target, target_fraction)
    summary = summarize(runs)
    folder = claims_dir or project_root() / CLAIMS_DIR
    claims = load_claims(folder)
    verdicts = [evaluate(claim, runs, study) for claim in claims]
    report = (
        _tuned(study, runs, metric, cost)
        if tuned.is_tuned(runs)
        else _plain(study, runs, summary, metric, cost)
    )
    claims_frame = claims_table(claims, verdicts)
    report.tables |= {"summary": summary, "runs": runs, "claims": claims_frame}
    report.metrics["claims"] = claims_json(claims, verdicts)
    written = []
    for name, frame in report.tables.items():
        path = out_dir / f"{name}.csv"
        atomic_write(path, lambda tmp, frame=frame: frame.to_csv(tmp, index=False))
        written.append(path)
    atomic_write_json(out_dir / "summary.json", report.metrics)
    written.append(out_dir / "summary.json")
    written += write_metrics_files(report.metrics_files, out_dir / METRICS_DIR)
    images = [plots.save_png(f, out_dir / f"{stem}.png") for stem, f in report.figures.items()]
    written += images
    incomplete = runs[runs["status"] == "incomplete"]
    phases = runs["phase"].fillna("plain").value_counts().to_dict()
    blocks: list[Block] = [
        ("h1", "Study report"),
        ("p", f"{len(runs)} run directories from {', '.join(map(str, paths))}: "
              f"{(runs['status'] == 'completed').sum()} completed, "
              f"{(runs['status'] == 'diverged').sum()} diverged, {len(incomplete)} incomplete"
              + (f" (by phase: {', '.join(f'{k} {v}' for k, v in sorted(phases.items()))})."
                 if tuned.is_tuned(runs) else ".")),
        *report.blocks,
        *_claims_blocks(claims_frame, folder),
    ]  # fmt: skip
    if not incomplete.empty:
        blocks += [("h2", "Incomplete runs (no metrics.json)")]
        blocks += [("table", incomplete[["run", "config"]])]
    diagnostics = [image for image in images if image.stem.startswith(DIAGNOSTICS_PLOT)]
    blocks += [("h2", "Plots"), *[("img", i) for i in images if i not in diagnostics]]
    if diagnostics:
        blocks += [("h2", "Optimizer diagnostics"), ("p", DIAGNOSTICS_TEXT)]
        blocks += [("img", image) for image in diagnostics]
    atomic_write_text(out_dir / "report.md", markdown(blocks))
    atomic_write_text(out_dir / "report.html", page(blocks, "Study report"))
    return [*written, out_dir / "report.md", out_dir / "report.html"]
