"""Scale-out end to end, as a user runs it: a sweep through ``launcher=joblib`` (two jobs at
once, one process each), the same sweep through ``launcher=submitit_local`` with every job a
two-process DDP run (the wiring of ``submitit_slurm``), and one ``trainer=ddp_cpu`` run whose
processes Lightning starts. The DDP runs match the one-process runs with their global batch
(a diverging one stops at the same step), and the report collects the runs wherever the
launchers put them."""

import os
import subprocess
import sys

import joblib
import pandas as pd
import pytest
from conftest import ROOT, read_metrics, run_train

from optstudy.cli import compose

# Two epochs of 8 full batches of 64 examples (digits has 1,221 training images; one DDP
# process takes 32 of each), whole validation and test splits.
RUN = ["data=digits", "model=mlp", "optimizer=sgd", "trainer.max_epochs=2"]
RUN += ["trainer.limit_train_batches=8"]
SWEEP = ["-m", *RUN, "optimizer.lr=0.1,1e6"]  # one run that learns, one that diverges
ONE_PROCESS = ["trainer=cpu", "data.batch_size=64"]
TWO_PROCESSES = ["trainer=ddp_cpu", "data.batch_size=32"]
# DDP averages the two processes' gradients of 32 examples each: the gradient of the 64 one
# process sees, up to the order of float additions. Final metrics agree to this absolute
# tolerance (accuracies on 216 validation images: one example is 0.0046).
TOLERANCE = 1e-5
COMPARED = ("best_val_acc", "final_val_acc", "final_val_loss", "final_train_loss", "test_acc")


def sweep_jobs(sweep_dir) -> list:
    """The job folders of a sweep (not the launcher's own dot-folders), sorted."""
    return sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def assert_same_metrics(one: dict, two: dict, tolerance: float = TOLERANCE) -> None:
    """``two`` ended where ``one`` did, within ``tolerance`` (default :data:`TOLERANCE`)."""
    ends = ("status", "steps", "epochs")
    assert [two[key] for key in ends] == [one[key] for key in ends]
    for key in COMPARED:
        expected = None if one[key] is None else pytest.approx(one[key], abs=tolerance)
        assert two[key] == expected, key


@pytest.fixture(scope="module")
def joblib_sweep(tmp_path_factory, cache_dir):
    """Both runs at once through joblib, one process each."""
    sweep_dir = tmp_path_factory.mktemp("joblib") / "sweep"
    args = [*SWEEP, *ONE_PROCESS, "launcher=joblib"]
    result = run_train([*args, f"hydra.sweep.dir={sweep_dir}"], sweep_dir / "unused", cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir, result.stdout + result.stderr


@pytest.fixture(scope="module")
def submitit_sweep(tmp_path_factory, cache_dir):
    """The same sweep through submitit, each job two tasks: a two-process DDP run."""
    sweep_dir = tmp_path_factory.mktemp("submitit") / "sweep"
    args = [*SWEEP, *TWO_PROCESSES, "launcher=submitit_local"]
    args += ["hydra.launcher.tasks_per_node=2", f"hydra.sweep.dir={sweep_dir}"]
    result = run_train(args, sweep_dir / "unused", cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, cache_dir):
    """The run that learns, in two DDP processes that Lightning starts."""
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    result = run_train([*RUN, *TWO_PROCESSES, "optimizer.lr=0.1"], run_dir, cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_joblib_runs_two_jobs_at_once_with_their_share_of_the_cores(joblib_sweep):
    sweep_dir, output = joblib_sweep
    assert "Joblib.Parallel(n_jobs=2" in output
    jobs = [read_metrics(job) for job in sweep_jobs(sweep_dir)]
    assert [(j["lr"], j["status"]) for j in jobs] == [(0.1, "completed"), (1e6, "diverged")]
    # cpu_count / n_jobs torch threads each (README), unless OMP_NUM_THREADS already says.
    share = int(os.environ.get("OMP_NUM_THREADS", max(joblib.cpu_count() // 2, 1)))
    assert {j["torch_threads"] for j in jobs} == {share}
    assert jobs[0]["final_val_acc"] > 0.5  # it learns: later comparisons are not of failures


def test_a_ddp_run_matches_one_process_with_its_global_batch(joblib_sweep, ddp_run):
    assert_same_metrics(read_metrics(sweep_jobs(joblib_sweep[0])[0]), read_metrics(ddp_run))


def test_a_ddp_run_writes_one_run_directory_once(ddp_run):
    assert [p.name for p in ddp_run.parent.iterdir()] == ["run"]
    assert list(ddp_run.parent.rglob(".hydra")) == [ddp_run / ".hydra"]
    files = {p.name for p in ddp_run.iterdir()}
    assert {"metrics.json", "history.csv", "run_info.json", "classes.json", "csv"} <= files
    assert {p.name for p in (ddp_run / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    assert len((ddp_run / "history.csv").read_text().splitlines()) == 3  # header + 2 epochs
    assert "MEMBER: 2/2" in (ddp_run / "train_ddp_process_1.log").read_text()


# A small VGG-style net: batch norm after every conv.
BATCH_NORM_RUN = ["data=digits", "model=vgg_small", "model.stages=[[8],[16]]", "model.hidden=32"]
BATCH_NORM_RUN += ["optimizer=sgd", "optimizer.lr=0.05", "trainer.max_epochs=2"]


def test_a_ddp_cpu_run_trains_a_batch_norm_model(tmp_path, cache_dir):
    """torch's SyncBatchNorm refuses CPU modules ("SyncBatchNorm layers only work with GPU
    modules"): ``trainer=ddp_cpu`` keeps each process's batch-norm statistics, ``trainer=ddp``
    (GPUs, not run here) synchronises them."""
    result = run_train([*BATCH_NORM_RUN, *TWO_PROCESSES], tmp_path / "ddp", cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_metrics(tmp_path / "ddp")
    assert (metrics["status"], metrics["steps"]) == ("completed", 2 * 20)  # ⌈1,222 / 64⌉ = 20
    assert metrics["final_val_acc"] > 0.5  # it learns (chance: 0.1)
    cfg, _ = compose(["trainer=ddp"])
    assert cfg.trainer.sync_batchnorm is True


def test_submitit_runs_each_job_as_a_ddp_run_of_its_tasks(joblib_sweep, submitit_sweep):
    jobs = sweep_jobs(submitit_sweep)
    assert [j.name for j in jobs] == ["0-sgd-constant-s0", "1-sgd-constant-s0"]
    for one_process, ddp_job in zip(sweep_jobs(joblib_sweep[0]), jobs, strict=True):
        assert_same_metrics(read_metrics(one_process), read_metrics(ddp_job))
    # Each task's console: <job id>_<task>_log.out, where the run's log lines go as on a
    # terminal (Lightning's among them).
    logs = sorted((submitit_sweep / ".submitit").rglob("*_log.out"))
    assert len(logs) == 4  # two jobs × two tasks
    for log in logs:
        rank = int(log.name.split("_")[-2])
        assert f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in log.read_text(), log


def test_the_report_collects_the_runs_of_both_launchers(tmp_path, joblib_sweep, submitit_sweep):
    out = tmp_path / "report"
    cmd = [sys.executable, "-m", "optstudy.report", str(joblib_sweep[0]), str(submitit_sweep)]
    result = subprocess.run(
        [*cmd, "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = pd.read_csv(out / "runs.csv")
    expected = sweep_jobs(joblib_sweep[0]) + sweep_jobs(submitit_sweep)
    assert sorted(runs["run"]) == sorted(map(str, expected))
    assert sorted(runs["status"]) == ["completed", "completed", "diverged", "diverged"]
