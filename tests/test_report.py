"""``python -m optstudy.report`` on real sweeps: the table matches the runs, plots are images,
diverged and failed runs are counted, never averaged."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, read_metrics, run_train
from omegaconf import OmegaConf
from PIL import Image
from scipy import stats
from study_runs import Run, write_run

from optstudy.report import main as report_main
from optstudy.study import plots
from optstudy.study.aggregate import prepare_runs, summarize
from optstudy.study.collect import load_lr_steps, load_study

PLOTS = {
    "learning_curves-1",
    "learning_curves-2",
    "optimizer_diagnostics-1",
    "optimizer_diagnostics-2",
    "lr_schedule-1",
    "lr_schedule-2",
    "lr_sensitivity",
    "time_to_target",
    "performance_profile",
}


def run_report(*args: str) -> subprocess.CompletedProcess:
    """``python -m optstudy.report ARGS`` as a user runs it."""
    cmd = [sys.executable, "-m", "optstudy.report", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def digits_sweep(tmp_path_factory, cache_dir) -> tuple[Path, subprocess.CompletedProcess]:
    """A digits sweep whose three jobs complete (lr 0.05), diverge (lr 1e6) and fail (lr -1)."""
    sweep_dir = tmp_path_factory.mktemp("sweeps") / "digits"
    args = ["-m", "data=digits", "model=mlp", "optimizer=sgd", "optimizer.lr=0.05,1e6,-1"]
    args += ["trainer.max_epochs=3", f"hydra.sweep.dir={sweep_dir}"]
    return sweep_dir, run_train(args, sweep_dir / "unused", cache_dir)


@pytest.fixture(scope="module")
def report(tmp_path_factory, fashion_sweep, digits_sweep) -> Path:
    """The report on both sweeps (two tasks)."""
    out = tmp_path_factory.mktemp("report") / "out"
    result = run_report(str(fashion_sweep), str(digits_sweep[0]), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_a_failed_or_diverged_job_does_not_stop_the_sweep(digits_sweep):
    sweep_dir, result = digits_sweep
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0-sgd-constant-s0", "1-sgd-constant-s0", "2-sgd-constant-s0"]
    assert read_metrics(jobs[0])["status"] == "completed"
    assert read_metrics(jobs[1])["status"] == "diverged"
    assert not (jobs[2] / "metrics.json").exists()
    assert f"error: job {jobs[2]} failed, the sweep goes on: optimizer.lr=-1 is invalid" in (
        result.stderr
    )
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: 1 of 3 jobs failed (2-sgd-constant-s0): see their train.log in {sweep_dir}"
    )


def _summary(report: Path) -> pd.DataFrame:
    return pd.read_csv(report / "summary.csv")


def test_summary_has_one_row_per_configuration(report):
    rows = _summary(report)[["data", "optimizer", "lr", "runs"]]
    assert sorted(map(tuple, rows.values.tolist())) == [
        ("digits", "sgd", -1.0, 1),
        ("digits", "sgd", 0.05, 1),
        ("digits", "sgd", 1e6, 1),
        ("fashion_mnist", "adam", 0.001, 2),
        ("fashion_mnist", "sgd", 0.01, 2),
    ]


def test_dvc_metrics_are_one_small_file_per_configuration(report):
    summary = _summary(report)
    files = {p.name: json.loads(p.read_text()) for p in (report / "metrics").iterdir()}
    assert len(files) == len(summary) == 5
    sgd = files["fashion_mnist_lenet5_sgd_lr_0.01.json"]
    row = summary.query("data == 'fashion_mnist' and optimizer == 'sgd'").iloc[0]
    assert sgd == {
        "seeds": 2,
        "diverged": 0,
        "best_val_acc": pytest.approx(row["best_val_acc_mean"]),
        "test_acc": pytest.approx(row["test_acc_mean"]),
    }
    assert files["digits_mlp_sgd_lr_-1.json"]["best_val_acc"] is None  # failed: no number


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_summary_numbers_match_the_runs_metrics(report, fashion_sweep, optimizer):
    row = _summary(report).query("data == 'fashion_mnist' and optimizer == @optimizer").iloc[0]
    runs = [
        read_metrics(p.parent)
        for p in fashion_sweep.glob(f"*-{optimizer}-constant-s*/metrics.json")
    ]
    assert row["seeds"] == len(runs) == 2 and row["diverged"] == 0
    for metric in ("best_val_acc", "final_val_acc", "test_acc", "final_val_loss", "train_time_s"):
        values = np.array([m[metric] for m in runs])
        assert row[f"{metric}_mean"] == pytest.approx(values.mean())
        assert row[f"{metric}_std"] == pytest.approx(values.std(ddof=1))
        low, high = stats.t.interval(0.95, 1, loc=values.mean(), scale=stats.sem(values))
        assert (row[f"{metric}_ci95_low"], row[f"{metric}_ci95_high"]) == pytest.approx((low, high))


def test_diverged_and_failed_runs_are_counted_not_averaged(report):
    summary = _summary(report).query("data == 'digits'").set_index("lr")
    assert summary.loc[1e6, ["diverged", "seeds", "incomplete"]].tolist() == [1, 0, 0]
    assert summary.loc[-1.0, ["diverged", "seeds", "incomplete"]].tolist() == [0, 0, 1]
    assert summary.loc[[1e6, -1.0], "best_val_acc_mean"].isna().all()
    assert summary.loc[0.05, "best_lr"] and not summary.loc[[1e6, -1.0], "best_lr"].any()
    markdown = (report / "report.md").read_text()
    assert "Runs that diverged: sgd lr=1e+06 (1 of 1)" in markdown
    assert "Runs that did not finish: sgd lr=-1 (1 of 1)" in markdown


def test_time_to_target_is_the_first_epoch_at_the_target(report):
    runs = pd.read_csv(report / "runs.csv").query("status == 'completed'")
    assert len(runs) == 5
    for run in runs.itertuples():
        history = pd.read_csv(Path(run.run) / "history.csv")
        reached = history[history["val_acc"] >= run.target_acc]
        expected = reached["epoch"].iloc[0] + 1 if len(reached) else np.nan
        assert run.epochs_to_target == pytest.approx(expected, nan_ok=True)
    summary = _summary(report)
    best = summary.groupby("data")["best_val_acc_mean"].max()
    assert summary["target_acc"].tolist() == pytest.approx((0.95 * best[summary["data"]]).tolist())


def test_target_and_target_fraction_set_the_target_of_time_to_target(tmp_path, fashion_sweep):
    """``--target`` fixes the target accuracy; ``--target-fraction`` scales the task's best
    mean best_val_acc (both through the CLI's own ``main``, in this process)."""
    fixed, half = tmp_path / "fixed", tmp_path / "half"
    assert report_main([str(fashion_sweep), "--out", str(fixed), "--target", "0.6"]) == 0
    runs = pd.read_csv(fixed / "runs.csv")
    assert (runs["target_acc"] == 0.6).all()
    for run in runs.itertuples():
        history = pd.read_csv(Path(run.run) / "history.csv")
        reached = history.index[history["val_acc"] >= 0.6]
        expected = reached[0] + 1 if len(reached) else np.nan
        assert run.epochs_to_target == pytest.approx(expected, nan_ok=True)
    assert report_main([str(fashion_sweep), "--out", str(half), "--target-fraction", "0.5"]) == 0
    summary = _summary(half)
    best = summary["best_val_acc_mean"].max()
    assert summary["target_acc"].tolist() == pytest.approx([0.5 * best] * 2)


def test_lrs_tried_counts_the_lrs_of_each_optimizer_setting(report):
    """Every lr run with the same optimizer setting on a task, failed and diverged runs too."""
    summary = _summary(report).set_index(["data", "optimizer", "lr"])["lrs_tried"]
    assert summary.to_dict() == {
        ("digits", "sgd", -1.0): 3,
        ("digits", "sgd", 0.05): 3,
        ("digits", "sgd", 1e6): 3,
        ("fashion_mnist", "adam", 0.001): 1,
        ("fashion_mnist", "sgd", 0.01): 1,
    }


def test_lrs_tried_counts_distinct_lrs_not_runs_and_keeps_settings_apart(tmp_path):
    """Synthetic runs where the number of lrs, of runs and of settings all differ: SGD at three
    lrs (two seeds each at two of them, a diverged one at the third: 5 runs), SGD with
    momentum 0.9 (another setting of the same optimizer) at one lr on 3 seeds, Adam at two lrs
    (4 runs)."""
    sgd, momentum = {"momentum": 0.0}, {"momentum": 0.9}
    runs = [("sgd", 0.1, s, "completed", sgd) for s in (0, 1)]
    runs += [("sgd", 0.01, s, "completed", sgd) for s in (0, 1)]
    runs += [("sgd", 10.0, 0, "diverged", sgd)]
    runs += [("sgd", 0.1, s, "completed", momentum) for s in (0, 1, 2)]
    runs += [("adam", 1e-3, s, "completed", {}) for s in (0, 1, 2)]
    runs += [("adam", 1e-2, 0, "completed", {})]
    for job, (optimizer, lr, seed, status, arguments) in enumerate(runs):
        run = Run(optimizer, lr, seed, [0.5, 0.6], 0.6, status=status, optimizer_args=arguments,
                  job=job)  # fmt: skip
        write_run(tmp_path, run)
    summary = summarize(prepare_runs(load_study([tmp_path])))
    tried = {row.config: row.lrs_tried for row in summary.itertuples()}
    assert tried == {
        "sgd lr=0.1 optimizer.momentum=0.0": 3, "sgd lr=0.01 optimizer.momentum=0.0": 3,
        "sgd lr=10 optimizer.momentum=0.0": 3, "sgd lr=0.1 optimizer.momentum=0.9": 1,
        "adam lr=0.001": 2, "adam lr=0.01": 2,  # no momentum: not Adam's argument
    }  # fmt: skip


def test_plots_are_non_empty_images(report):
    assert {p.stem for p in report.glob("*.png")} == PLOTS
    for name in PLOTS:
        with Image.open(report / f"{name}.png") as image:
            pixels = np.asarray(image.convert("L"))
        assert min(pixels.shape) > 200 and pixels.std() > 5, name


def test_html_report_is_self_contained(report):
    html = (report / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(PLOTS)
    assert html.count("src=") == len(PLOTS)
    assert "<table" in html and ("within seed noise" in html or "beyond seed noise" in html)


def test_reading_matches_welchs_test(report, fashion_sweep):
    comparison = pd.read_csv(report / "comparison.csv").query("task == 'fashion_mnist/lenet5'")
    values = {
        name: [
            read_metrics(p.parent)["test_acc"]
            for p in fashion_sweep.glob(f"*-{name}-constant-s*/m*.json")
        ]
        for name in ("sgd", "adam")
    }
    p_value = stats.ttest_ind(values["sgd"], values["adam"], equal_var=False).pvalue
    worse = comparison[comparison["verdict"] != "best"].iloc[0]
    assert worse["p_value"] == pytest.approx(p_value)
    expected = "within seed noise" if p_value >= 0.05 else "worse beyond seed noise"
    assert worse["verdict"] == expected
    assert expected in (report / "report.md").read_text()


def test_lr_schedule_comes_from_the_step_log(fashion_sweep):
    run = next(fashion_sweep.glob("*-adam-constant-s0"))
    log = pd.read_csv(run / "csv" / "metrics.csv")
    logged = log[["step", "lr-Adam"]].dropna()
    assert len(logged) >= 4
    steps = load_lr_steps(run)
    assert set(logged["step"]) <= set(steps["step"]) and steps["step"].iloc[0] == 0
    assert (steps["lr"] == 0.001).all()


def test_diagnostics_plot_shows_the_mean_over_seeds(report, fashion_sweep):
    study = load_study([fashion_sweep])
    runs = prepare_runs(study)
    configs = sorted(runs["config"].unique())  # adam lr=0.001, sgd lr=0.01
    figure = plots.optimizer_diagnostics(runs, study.diagnostics, configs)
    step_size, grad_norm = figure.axes[0], figure.axes[1]
    assert [line.get_label() for line in step_size.lines] == configs
    for line, name in zip(grad_norm.lines, ("adam", "sgd"), strict=True):
        seeds = [
            pd.read_csv(d / "diagnostics.csv") for d in fashion_sweep.glob(f"*-{name}-constant-s*")
        ]
        whole = [s[s["layer"] == "all"].set_index("step")["grad_norm"] for s in seeds]
        assert len(whole) == 2 and whole[0].index.tolist() == list(range(0, 40, 5))
        np.testing.assert_allclose(line.get_ydata(), (whole[0] + whole[1]) / 2)
    adam, sgd = (line.get_ydata() for line in step_size.lines)
    np.testing.assert_allclose(sgd, 0.01, rtol=1e-6)  # SGD's step size is its lr (float32)
    assert adam[-1] != adam[0]
    assert "## Optimizer diagnostics" in (report / "report.md").read_text()


def test_runs_without_diagnostics_still_report(tmp_path, fashion_sweep):
    """Runs of an older version among new ones: the Adam runs have no diagnostics.csv, one of
    them no diagnostics callback in its config; then no run has diagnostics at all."""
    sweep, out = tmp_path / "fashion", tmp_path / "out"
    shutil.copytree(fashion_sweep, sweep)
    for path in sweep.glob("*-adam-constant-s*/diagnostics.csv"):
        path.unlink()
    config_file = next(sweep.glob("*-adam-constant-s0")) / ".hydra" / "config.yaml"
    config = OmegaConf.load(config_file)
    del config.callbacks["diagnostics"]
    OmegaConf.save(config, config_file)
    assert run_report(str(sweep), "--out", str(out)).returncode == 0
    summary = pd.read_csv(out / "summary.csv")
    assert dict(zip(summary["optimizer"], summary["seeds"], strict=True)) == {"adam": 2, "sgd": 2}
    assert (out / "optimizer_diagnostics.png").is_file()
    for path in sweep.glob("*/diagnostics.csv"):
        path.unlink()
    shutil.rmtree(out)
    result = run_report(str(sweep), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (out / "optimizer_diagnostics.png").exists() and (out / "report.html").is_file()
    assert "Optimizer diagnostics" not in (out / "report.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/missing"], "error: {tmp}/missing does not exist"),
        (["{tmp}"], "error: no run directory (a folder with .hydra/config.yaml) under {tmp}"),
        (["{tmp}", "--metric", "loss"], "error: argument --metric: invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    result = run_report(*[a.format(tmp=tmp_path) for a in args], "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.startswith(message.format(tmp=tmp_path))
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out" / "summary.csv").exists()


def test_unwritable_out_dir_is_one_line(tmp_path, fashion_sweep):
    (tmp_path / "file").write_text("")
    result = run_report(str(fashion_sweep), "--out", str(tmp_path / "file" / "out"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: --out: cannot create the run directory")


def test_metrics_json_of_runs_is_what_the_report_read(report):
    runs = pd.read_csv(report / "runs.csv")
    for run in runs.itertuples():
        metrics_file = Path(run.run) / "metrics.json"
        if metrics_file.exists():
            assert run.status == json.loads(metrics_file.read_text())["status"]
        else:
            assert run.status == "incomplete"
