"""The report of a tuned study, on a synthetic study in the real run-directory formats (two
tasks, SGD / momentum / Adam tuned on a four-point lr grid where SGD's largest lr diverges,
three final seeds, library defaults on the same seeds): the answer comes first, rankings and
Holm-corrected tests match an independent computation, tuneability counts the diverged trial,
lr sensitivity marks the selected lr, the profile scores follow from the speeds."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT
from scipy import stats
from statsmodels.stats.multitest import multipletests
from study_runs import Run, study_block, write_run

from optstudy.study import plots
from optstudy.study.aggregate import prepare_runs
from optstudy.study.collect import load_study
from optstudy.study.report import write_report
from optstudy.study.tuneability import setting_scores

TASKS = {"t_cnn": ("digits", "cnn"), "t_mlp": ("digits", "mlp")}
LRS = (0.001, 0.01, 0.1, 1.0)
PEAK = {"sgd": 0.1, "momentum": 0.01, "adam": 0.001}  # each optimizer's best lr in tuning
DEFAULT_LR = {"sgd": 0.01, "momentum": 0.01, "adam": 0.001}
# Final test accuracies over seeds 1, 2, 3.
FINAL = {
    "t_cnn": {
        "momentum": (0.95, 0.96, 0.955),
        "adam": (0.90, 0.905, 0.91),
        "sgd": (0.85, 0.86, 0.855),
    },
    "t_mlp": {
        "adam": (0.90, 0.91, 0.92),
        "momentum": (0.895, 0.905, 0.915),
        "sgd": (0.80, 0.81, 0.82),
    },
}
# Epochs after which each optimizer's final runs reach the target (never: None).
REACHED = {
    "t_cnn": {"momentum": 2, "adam": None, "sgd": None},
    "t_mlp": {"adam": 2, "momentum": 3, "sgd": None},
}


def tuning_score(optimizer: str, lr: float) -> float:
    """best_val_acc of a tuning run: 0.9 at the optimizer's peak, 0.1 less a decade away."""
    return 0.9 - 0.1 * abs(math.log10(lr / PEAK[optimizer]))


def _curve(test: float, reached: int | None, target: float) -> list[float]:
    """Three epochs of val acc that first reach ``target`` after ``reached`` epochs."""
    below = target - 0.2
    return [target + 0.01 if reached is not None and e + 1 >= reached else below for e in range(3)]


def write_study(root: Path) -> None:
    """The synthetic study: tune, defaults and final runs under ``root``."""
    block = study_block("syn", TASKS)
    job = itertools.count()
    for task, (data, model) in TASKS.items():
        for optimizer, lr in itertools.product(PEAK, LRS):
            score = tuning_score(optimizer, lr)
            status = "diverged" if (optimizer, lr) == ("sgd", 1.0) else "completed"
            run = Run(optimizer, lr, 0, [score - 0.2, score - 0.1, score], score, data=data,
                      model=model, status=status, job=next(job))  # fmt: skip
            write_run(root / "tune" / task, run, block, task, "tune")
        target = 0.8
        for optimizer, tests in FINAL[task].items():
            for seed, test in zip((1, 2, 3), tests, strict=True):
                curve = _curve(test, REACHED[task][optimizer], target)
                run = Run(optimizer, PEAK[optimizer], seed, curve, test, data=data, model=model,
                          job=next(job), eff_steps=[1.0, 0.8, 0.6])  # fmt: skip
                write_run(root / "final" / task, run, block, task, "final")
                run = Run(optimizer, DEFAULT_LR[optimizer], seed, [0.5, 0.6, 0.7], test - 0.05,
                          data=data, model=model, job=next(job))  # fmt: skip
                write_run(root / "defaults" / task, run, block, task, "defaults")


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tuned") / "syn"
    write_study(root)
    return root


@pytest.fixture(scope="module")
def report(study_dir) -> Path:
    """``python -m optstudy.report`` on the study, its target fixed at 0.8 validation acc."""
    out = study_dir.parent / "report"
    cmd = [sys.executable, "-m", "optstudy.report", str(study_dir), "--out", str(out)]
    result = subprocess.run([*cmd, "--target", "0.8"], capture_output=True, text=True, cwd=ROOT,
                            timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def _headings(report: Path) -> list[str]:
    text = (report / "report.md").read_text()
    return [line for line in text.splitlines() if line.startswith("## ")]


def test_the_report_leads_with_the_answer(report):
    assert _headings(report)[:5] == [
        "## The answer",
        "## Ranking per task: tuned vs one-shot (test_acc)",
        "## Performance, speed and tuneability",
        "## Performance profile over 2 tasks",
        "## Claims",
    ]
    text = (report / "report.md").read_text()
    answer = text.split("## The answer")[1].split("## Ranking")[0]
    assert "t_cnn: best tuned is momentum-constant (lr=0.01), test_acc 0.9550 over 3 seeds." in (
        answer
    )
    assert "Within noise of it: momentum-constant." in answer.split("t_mlp:")[1]


def test_final_ranking_matches_welch_and_holm_computed_independently(report):
    ranking = pd.read_csv(report / "ranking.csv")
    for task, tests in FINAL.items():
        rows = ranking[(ranking["task"] == task) & (ranking["phase"] == "final")]
        rows = rows.set_index("config")
        best = max(tests, key=lambda o: np.mean(tests[o]))
        others = [o for o in tests if o != best]
        p_values = [stats.ttest_ind(tests[o], tests[best], equal_var=False).pvalue for o in others]
        adjusted = multipletests(p_values, method="holm")[1]
        for optimizer, p, p_holm in zip(others, p_values, adjusted, strict=True):
            row = rows.loc[f"{optimizer}-constant"]
            assert (row["p_value"], row["p_holm"]) == pytest.approx((p, p_holm))
            expected = "within seed noise" if p_holm >= 0.05 else "worse beyond seed noise"
            assert row["verdict"] == expected and row["comparisons"] == 2
        assert rows.loc[f"{best}-constant", "verdict"] == "best"
        assert rows.loc[f"{best}-constant", "rank"] == 1


def test_summary_json_carries_both_rankings_with_their_intervals(report):
    summary = json.loads((report / "summary.json").read_text())
    assert summary["study"] == "syn"
    assert set(summary) == {"study", "final", "defaults", "tuneability", "profile", "claims"}
    entry = summary["final"]["t_mlp"]["adam-constant"]
    tests = FINAL["t_mlp"]["adam"]
    low, high = stats.t.interval(0.95, 2, loc=np.mean(tests), scale=stats.sem(tests))
    assert (entry["mean"], entry["ci95_low"], entry["ci95_high"]) == pytest.approx(
        (np.mean(tests), low, high)
    )
    assert entry["setting"] == "lr=0.001" and entry["rank"] == 1
    one_shot = summary["defaults"]["t_mlp"]["adam-constant"]
    assert one_shot["mean"] == pytest.approx(np.mean(tests) - 0.05)
    assert one_shot["setting"] == "lr=0.001"  # the tuned setting, shown next to it


def test_dvc_metrics_are_one_small_file_per_task_and_configuration(report):
    files = {p.name: json.loads(p.read_text()) for p in (report / "metrics").iterdir()}
    assert sorted(files) == sorted(f"{t}_{o}-constant.json" for t in TASKS for o in PEAK)
    for task, finals in FINAL.items():
        order = sorted(finals, key=lambda o: -np.mean(finals[o]))  # best mean first
        for optimizer, tests in finals.items():
            assert files[f"{task}_{optimizer}-constant.json"] == {
                "seeds": 3,
                "test_acc": pytest.approx(np.mean(tests)),
                "rank": order.index(optimizer) + 1,
            }


def test_ranking_table_shows_tuned_and_one_shot_side_by_side(report):
    text = (report / "report.md").read_text().split("## Ranking per task")[1]
    header = text.splitlines()[2]
    for column in (
        "selected setting",
        "tuned test_acc [95% CI]",
        "tuned rank",
        "one-shot test_acc [95% CI]",
        "one-shot rank",
        "one-shot verdict (Holm p)",
    ):
        assert column in header  # fmt: skip
    assert "Kendall's τ between the tuned and one-shot rankings: 1.00" in (
        (report / "report.md").read_text()
    )


def test_tuneability_counts_the_diverged_trial_against_sgd(report):
    table = pd.read_csv(report / "tuneability.csv").set_index(["task", "configuration"])
    for task in TASKS:
        sgd = table.loc[(task, "sgd-constant")]
        assert (sgd["tried"], sgd["trained"]) == (4, 3)
        scores = [0.0 if lr == 1.0 else tuning_score("sgd", lr) for lr in LRS]  # diverged: 0
        for k in (1, 2, 3, 4):
            brute = np.mean([max(c) for c in itertools.combinations(scores, k)])
            assert sgd[f"after_{k}"] == pytest.approx(brute)
        assert table.loc[(task, "adam-constant"), "trained_share"] == 1.0
    markdown = (report / "report.md").read_text()
    assert "| t_mlp  | sgd-constant" in markdown and "3/4" in markdown


def test_a_diverged_tuning_run_does_not_stop_the_study(report):
    runs = pd.read_csv(report / "runs.csv")
    diverged = runs[runs["status"] == "diverged"]
    assert len(diverged) == 2 and set(diverged["phase"]) == {"tune"}
    settings = pd.read_csv(report / "settings.csv")
    sgd = settings[(settings["configuration"] == "sgd-constant") & (settings["lr"] == 1.0)]
    assert sgd["trained"].tolist() == [False, False] and sgd["score"].tolist() == [0.0, 0.0]
    assert "sgd-constant" in pd.read_csv(report / "ranking.csv")["config"].tolist()


def test_speed_and_profile_follow_the_steps_to_target(report):
    summary = json.loads((report / "summary.json").read_text())
    # Steps to target: reached after e epochs of 10 steps. t_cnn: momentum 20, others never;
    # t_mlp: adam 20, momentum 30, sgd never. Ratios: momentum 1 and 1.5, adam 4 and 1,
    # sgd 4 and 4; score = mean over tasks of (4 − r) / 3.
    assert summary["profile"] == pytest.approx(
        {"momentum-constant": (3 + 2.5) / 6, "adam-constant": 3 / 6, "sgd-constant": 0.0}
    )
    profile = pd.read_csv(report / "profile.csv").set_index("task")
    assert profile.loc["t_mlp", "momentum-constant"] == pytest.approx(1.5)


def test_lr_sensitivity_marks_the_selected_lr(study_dir):
    study = load_study([study_dir])
    runs = prepare_runs(study)
    tune = runs[runs["phase"] == "tune"]
    settings = setting_scores(tune, "best_val_acc")
    selected = runs[runs["phase"] == "final"].groupby(["task", "configuration"])["lr"].first()
    figure = plots.tuning_sensitivity(settings, selected, "best_val_acc")
    for ax in figure.axes:
        lines = {line.get_label(): line for line in ax.lines}
        assert set(lines) == {"adam-constant", "momentum-constant", "sgd-constant"}
        sgd = lines["sgd-constant"]
        assert sgd.get_xdata().tolist() == [0.001, 0.01, 0.1]  # lr 1 diverged: a ×, no point
        stars = [c for c in ax.collections if c.get_paths() and len(c.get_offsets()) == 1
                 and c.get_sizes()[0] == 180]  # fmt: skip
        assert sorted(float(c.get_offsets()[0][0]) for c in stars) == [0.001, 0.01, 0.1]


@pytest.fixture(scope="module")
def plain_report(tmp_path_factory) -> Path:
    """The report of a plain sweep: two tasks, SGD at two lrs and Adam, seeds 0 and 1."""
    root = tmp_path_factory.mktemp("plain")
    for job, (model, (optimizer, lr, test), jitter) in enumerate(
        itertools.product(
            ("mlp", "cnn"), (("sgd", 0.01, 0.8), ("sgd", 0.1, 0.85), ("adam", 0.001, 0.9)),
            (-0.003, 0.004),
        )
    ):  # fmt: skip
        run = Run(optimizer, lr, job % 2, [test - 0.2, test + jitter], test + jitter, model=model,
                  job=job)  # fmt: skip
        write_run(root / "sweep", run)
    write_report([root / "sweep"], root / "report")
    return root / "report"


def test_a_plain_sweep_keeps_its_report_with_holm_and_claims(plain_report):
    assert _headings(plain_report)[0] == "## Reading"
    assert "## Claims" in _headings(plain_report)
    assert "## The answer" not in _headings(plain_report)
    comparison = pd.read_csv(plain_report / "comparison.csv")
    for _, group in comparison.groupby("task"):
        others = group[group["verdict"] != "best"]
        expected = multipletests(others["p_value"], method="holm")[1]
        np.testing.assert_allclose(others["p_holm"], expected)
    summary = json.loads((plain_report / "summary.json").read_text())
    assert sorted(summary) == [
        "claims", "digits/cnn/adam lr=0.001", "digits/cnn/sgd lr=0.01", "digits/cnn/sgd lr=0.1",
        "digits/mlp/adam lr=0.001", "digits/mlp/sgd lr=0.01", "digits/mlp/sgd lr=0.1",
    ]  # fmt: skip
    verdicts = {name: claim["verdict"] for name, claim in summary["claims"].items()}
    assert verdicts["adam_fastest_early"] == "not tested"  # a plain sweep has no final phase
