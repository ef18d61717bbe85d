"""W&B tracking with real wandb in offline mode, read back from the runs' own ``.wandb`` files."""

from __future__ import annotations

import csv
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pytest
import yaml
from conftest import ROOT, read_metrics, run_train
from omegaconf import OmegaConf
from wandb_records import WandbRunFile, read_run_file, run_files

from optstudy.artifacts import DIAGNOSTICS_COLUMNS as COLUMNS
from optstudy.tracking.run_config import plain_config
from optstudy.tracking.wandb_mode import choose_mode

DIGITS = ["logger=wandb", "data=digits", "model=mlp", "trainer.log_every_n_steps=5"]
FAKE_KEY = secrets.token_hex(20)  # the shape of a W&B API key, valid nowhere
TESTS = ROOT / "tests"


@pytest.fixture(scope="module")
def wandb_env(tmp_path_factory: pytest.TempPathFactory):
    """No API key, no WANDB_MODE, and wandb's config, cache, data and home folders in tmp."""
    home = tmp_path_factory.mktemp("wandb_home")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_SILENT", "NETRC"):
            mp.delenv(name, raising=False)
        mp.setenv("HOME", str(home))
        for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            mp.setenv(name, str(home / name.lower()))
        yield home


def _only_run(run_dir: Path) -> WandbRunFile:
    (path,) = run_files(run_dir / "wandb")
    return read_run_file(path)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _w_and_b_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if "W&B: " in line]


@pytest.fixture(scope="module")
def single_run(wandb_env, tmp_path_factory, cache_dir):
    """``python train.py logger=wandb`` with no API key; its run dir sits in a study folder."""
    run_dir = tmp_path_factory.mktemp("wandb_single") / "my_study" / "job"
    args = [*DIGITS, "optimizer=sgd", "scheduler=cosine", "seed=1", "trainer.max_epochs=2"]
    args += ["callbacks.diagnostics.interval=5"]
    result = run_train(args, run_dir, cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result, _only_run(run_dir)


def test_without_api_key_the_run_is_offline_with_one_line_on_how_to_sync(single_run):
    run_dir, result, _ = single_run
    (line,) = _w_and_b_lines(result)
    (offline_dir,) = (run_dir / "wandb").glob("offline-run-*")
    assert line.endswith(f"W&B: offline (no API key); sync later with: wandb sync {offline_dir}")


def test_wandb_warns_about_nothing_lightning_passes_it(single_run):
    _, result, _ = single_run
    assert "anonymous" not in result.stdout + result.stderr  # quiet.drop_removed_wandb_arguments


def test_run_is_grouped_by_study_named_and_tagged_by_its_choices(single_run):
    run = single_run[2].run
    assert (run["project"], run["run_group"], run["job_type"]) == ("optstudy", "my_study", "train")
    assert run["display_name"] == "sgd-cosine-s1"
    assert run["tags"] == ["sgd", "cosine", "mlp", "digits"]


def test_config_is_the_resolved_run_config(single_run):
    run_dir, _, wandb_run = single_run
    saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert set(wandb_run.config) == set(saved)
    assert wandb_run.config["optimizer"]["lr"] == saved.optimizer.lr
    assert wandb_run.config["seed"] == 1
    assert wandb_run.config["paths"]["output_dir"] == str(run_dir)  # resolved, not ${hydra:...}
    assert wandb_run.config["logger"]["wandb"]["name"] == "sgd-cosine-s1"


def test_history_has_step_loss_and_lr_and_the_epoch_metrics_of_history_csv(single_run):
    run_dir, _, wandb_run = single_run
    epochs = [row for row in wandb_run.history if "val_acc" in row]
    train_epochs = [row for row in wandb_run.history if "train_acc" in row]
    history = _csv_rows(run_dir / "history.csv")
    assert [row["val_acc"] for row in epochs] == [float(r["val_acc"]) for r in history]
    assert [row["val_loss"] for row in epochs] == [float(r["val_loss"]) for r in history]
    assert [row["train_loss"] for row in train_epochs] == [float(r["train_loss"]) for r in history]

    steps = _csv_rows(run_dir / "csv" / "metrics.csv")  # the CSV logger saw the same values
    for key in ("train_loss_step", "lr-SGD"):
        logged = [row[key] for row in wandb_run.history if key in row]
        assert len(logged) >= 6  # 2 epochs of 20 steps, every 5 steps
        assert logged == [float(row[key]) for row in steps if row.get(key)]
    lrs = [row["lr-SGD"] for row in wandb_run.history if "lr-SGD" in row]
    assert lrs[0] > lrs[-1]  # the cosine schedule, step by step


def test_history_has_the_whole_model_diagnostics_at_their_steps(single_run):
    run_dir, _, wandb_run = single_run
    rows = pd.read_csv(run_dir / "diagnostics.csv").query("layer == 'all'")
    assert rows["step"].tolist() == list(range(0, 40, 5))
    logged = [row for row in wandb_run.history if "diagnostics/grad_norm" in row]
    assert [row["trainer/global_step"] for row in logged] == rows["step"].tolist()
    for column in COLUMNS[3:]:  # every value measured, from grad_norm to eff_step_p90
        values = [row[f"diagnostics/{column}"] for row in logged]
        assert values == pytest.approx(rows[column].tolist(), rel=1e-6), column


def test_summary_is_metrics_json_and_the_run_finished(single_run):
    run_dir, _, wandb_run = single_run
    metrics = read_metrics(run_dir)
    assert {key: wandb_run.summary[key] for key in metrics} == metrics
    assert metrics["status"] == "completed" and wandb_run.exit_code == 0


class Sweep(NamedTuple):
    """A finished multirun: its folder, output, duration, job folders and their W&B runs."""

    dir: Path
    result: subprocess.CompletedProcess
    elapsed: float
    job_dirs: list[Path]
    runs: list[WandbRunFile]


@pytest.fixture(scope="module")
def sweep_with_fake_key(wandb_env, tmp_path_factory, cache_dir):
    """A 2-job multirun with an API key but no server (here none is reachable; elsewhere the
    server rejects the key): each job tries online briefly, then goes offline. ``+leak`` puts
    the key into the config through an interpolation."""
    sweep_dir = tmp_path_factory.mktemp("wandb_sweep") / "sweep"
    args = [
        "-m",
        *DIGITS,
        "seed=0,1",
        "trainer.max_epochs=1",
        "logger.wandb.init_timeout=2",
        "+leak=key:${oc.env:WANDB_API_KEY}",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    start = time.perf_counter()
    result = run_train(args, sweep_dir / "unused", cache_dir, env={"WANDB_API_KEY": FAKE_KEY})
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-3000:]
    job_dirs = sorted(p for p in sweep_dir.iterdir() if (p / "metrics.json").is_file())
    return Sweep(sweep_dir, result, elapsed, job_dirs, [_only_run(job) for job in job_dirs])


def test_multirun_makes_one_finished_run_per_job(sweep_with_fake_key):
    sweep = sweep_with_fake_key
    assert len(sweep.job_dirs) == 2
    assert len({run.run["run_id"] for run in sweep.runs}) == 2
    names = [run.run["display_name"] for run in sweep.runs]
    assert names == ["adam-constant-s0", "adam-constant-s1"]
    assert {run.run["run_group"] for run in sweep.runs} == {"sweep"}
    for job_dir, run in zip(sweep.job_dirs, sweep.runs, strict=True):
        assert [row["epoch"] for row in run.history if "val_acc" in row] == [0]  # its own only
        assert run.summary["seed"] == read_metrics(job_dir)["seed"]
        assert run.exit_code == 0


def test_api_key_without_server_falls_back_to_offline_without_blocking(sweep_with_fake_key):
    sweep = sweep_with_fake_key
    lines = _w_and_b_lines(sweep.result)
    assert len(lines) == 2 and all("W&B: offline (online start failed" in x for x in lines)
    assert sweep.elapsed < 120  # two jobs with init_timeout=2, not wandb's default 90 s each
    for job_dir in sweep.job_dirs:  # the failed online attempts left no run to sync
        assert not list((job_dir / "wandb").glob("run-*"))


def test_api_key_is_written_nowhere(sweep_with_fake_key):
    sweep = sweep_with_fake_key
    files = [p for p in sweep.dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files)
    assert not [p for p in files if FAKE_KEY.encode() in p.read_bytes()]
    assert FAKE_KEY not in sweep.result.stdout + sweep.result.stderr
    assert [run.config["leak"] for run in sweep.runs] == ["<redacted>"] * 2
    for job_dir in sweep.job_dirs:  # the config every logger got, the CSV logger's too
        hparams = yaml.safe_load((job_dir / "csv" / "hparams.yaml").read_text())
        assert hparams["leak"] == "<redacted>" and hparams["seed"] == read_metrics(job_dir)["seed"]


def test_a_failed_job_marks_its_run_failed_and_the_next_job_gets_its_own(
    wandb_env, tmp_path, cache_dir
):
    """A sweep whose first job crashes at step 3 (a test callback raises) and whose second
    completes: the first run ends with exit code 1, the second is a new run that ends with 0."""
    sweep_dir = tmp_path / "sweep"
    args = ["-m", *DIGITS, "trainer.max_epochs=1", f"hydra.sweep.dir={sweep_dir}"]
    args += ["+callbacks.fail._target_=helpers.fail_at.FailAt", "+callbacks.fail.step=3,1000"]
    result = run_train(args, sweep_dir / "unused", cache_dir, env={"PYTHONPATH": str(TESTS)})
    assert result.returncode == 0, result.stderr[-3000:]
    failed, completed = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert "RuntimeError: failing on purpose at step 3" in result.stderr
    assert not (failed / "metrics.json").exists() and (completed / "metrics.json").is_file()
    failed_run, completed_run = _only_run(failed), _only_run(completed)
    assert (failed_run.exit_code, completed_run.exit_code) == (1, 0)
    assert failed_run.run["run_id"] != completed_run.run["run_id"]
    assert completed_run.summary["status"] == "completed" and "status" not in failed_run.summary


def test_plain_config_redacts_the_api_key(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    cfg = OmegaConf.create({"a": {"b": ["x", "${oc.env:WANDB_API_KEY}"]}, "lr": 0.1})
    assert plain_config(cfg) == {"a": {"b": ["x", "<redacted>"]}, "lr": 0.1}


def test_mode_offline_flag_then_wandb_mode_then_api_key(wandb_env, monkeypatch):
    assert choose_mode(offline=False) == ("offline", "no API key")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    assert choose_mode(offline=False).mode == "online"
    assert choose_mode(offline=True) == ("offline", "logger.wandb.offline=true")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert choose_mode(offline=False) == ("disabled", "WANDB_MODE=disabled")
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "too-short")
    mode, reason = choose_mode(offline=False)
    assert mode == "offline" and reason.startswith("API key not usable:")
    monkeypatch.delenv("WANDB_API_KEY")
    assert choose_mode(offline=False) == ("offline", "no API key")


REPORT_SCRIPT = """
import logging
import sys
from pathlib import Path
from optstudy.tracking.wandb_report import log_study_report
logging.basicConfig(level=logging.INFO)
out = Path(sys.argv[1])
tables = {"summary": out / "summary.csv", "claims": out / "claims.csv"}
verdicts = {"no_single_winner": "inconclusive", "e2_reported_accuracy": "not tested"}
print(log_study_report(out, "smoke", tables, [out / "curves.png", out / "lr.png"], verdicts))
"""


def test_study_report_goes_to_a_report_run_of_the_study(wandb_env, tmp_path):
    from PIL import Image

    (tmp_path / "summary.csv").write_text("optimizer,mean_test_acc\nadam,0.91\nsgd,0.85\n")
    (tmp_path / "claims.csv").write_text("claim,verdict\nNo optimizer wins,inconclusive\n")
    for name, size in (("curves", (64, 48)), ("lr", (32, 16))):
        Image.new("RGB", size, "white").save(tmp_path / f"{name}.png")
    result = subprocess.run(
        [sys.executable, "-c", REPORT_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "WANDB_MODE": "offline"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    assert run_dir.parent == tmp_path / "wandb"
    (line,) = _w_and_b_lines(result)
    assert f"W&B: offline (WANDB_MODE=offline); sync later with: wandb sync {run_dir}" in line

    report = _only_run(tmp_path)
    assert (report.run["run_group"], report.run["job_type"]) == ("smoke", "report")
    assert report.run["display_name"] == "smoke-report" and report.exit_code == 0
    (logged,) = report.history  # media values are flattened: "<key>.path", "<key>.width", ...
    assert logged["summary._type"] == "table-file"
    table = json.loads((run_dir / "files" / logged["summary.path"]).read_text())
    assert table["columns"] == ["optimizer", "mean_test_acc"]
    assert table["data"] == [["adam", 0.91], ["sgd", 0.85]]
    claims = json.loads((run_dir / "files" / logged["claims.path"]).read_text())
    assert claims["data"] == [["No optimizer wins", "inconclusive"]]
    assert report.summary["claims/no_single_winner"] == "inconclusive"
    assert report.summary["claims/e2_reported_accuracy"] == "not tested"
    for name, size in (("curves", (64, 48)), ("lr", (32, 16))):
        key = f"plots/{name}"
        assert logged[f"{key}._type"] == "image-file"
        assert (logged[f"{key}.width"], logged[f"{key}.height"]) == size
        assert Image.open(run_dir / "files" / logged[f"{key}.path"]).size == size


@pytest.fixture(scope="module")
def study_run(wandb_env, tmp_path_factory, cache_dir):
    """A run of a tuned study's final phase (its study block as the study sweeper sets it),
    logger=wandb."""
    run_dir = tmp_path_factory.mktemp("wandb_study") / "final" / "digits_mlp" / "0-sgd"
    study = ["+study.name=smoke", "+study.task=digits_mlp", "+study.phase=final"]
    args = [*DIGITS, "optimizer=sgd", *study]
    result = run_train([*args, "seed=1", "trainer.max_epochs=1"], run_dir, cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return _only_run(run_dir)


def test_a_study_run_is_grouped_by_study_and_tagged_with_its_task_and_phase(study_run):
    run = study_run.run
    assert run["run_group"] == "smoke"  # the study, not the task folder it sits in
    assert run["tags"] == ["sgd", "constant", "mlp", "digits", "digits_mlp", "final"]
    assert study_run.config["study"]["task"] == "digits_mlp"
    assert study_run.config["study"]["phase"] == "final"


def test_runs_without_wandb_do_not_import_it():
    """wandb takes seconds to import: only logger=wandb (or a report sent to W&B) pays."""
    modules = "optstudy.run, optstudy.tracking.wandb_job_end"
    check = f"import sys, {modules}; print('wandb' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert result.stdout.strip() == "False", result.stderr[-3000:]


def test_report_wandb_sends_a_tuned_studys_verdicts_and_tables(wandb_env, tmp_path):
    from test_tuned_report import write_study

    write_study(tmp_path / "syn")
    out = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "-m", "optstudy.report", str(tmp_path / "syn"), "--out", str(out),
         "--target", "0.8", "--wandb"],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
        env={**os.environ, "WANDB_MODE": "offline"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = _only_run(out)
    assert (report.run["run_group"], report.run["display_name"]) == ("syn", "syn-report")
    (logged,) = report.history
    for table in ("claims", "ranking", "tuneability", "profile", "summary"):
        assert logged[f"{table}._type"] == "table-file", table
    assert logged["plots/lr_sensitivity._type"] == "image-file"
    claims = json.loads((out / "summary.json").read_text())["claims"]
    assert {k.removeprefix("claims/"): v for k, v in report.summary.items()
            if k.startswith("claims/")} == {n: c["verdict"] for n, c in claims.items()}  # fmt: skip
