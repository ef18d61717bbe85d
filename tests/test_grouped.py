"""``launcher=grouped``: a sweep's runs planned into groups and trained in one process, each
member writing the run directory it would have written alone."""

import json
import os
import shlex
import subprocess
import sys

import pandas as pd
import pytest
from conftest import ROOT, read_metrics, run_train

from optstudy.grouping import describe, differences, group_key, plan_groups
from optstudy.report import main as report_main

WITH_HELPERS = {"PYTHONPATH": str(ROOT / "tests")}
WITH_BENCHMARKS = {"PYTHONPATH": str(ROOT / "benchmarks")}
QUIET = ["callbacks.progress_bar=null", "trainer.enable_progress_bar=false"]
# Three seeds of one configuration: one group. Two epochs, the lr logged every 5 steps.
JOB = ["data=digits", "model=mlp", "optimizer=adam", "trainer.max_epochs=2"]
SEEDS = "seed=0,1,2"
SIGTERM_IN_SEED_1 = [
    "+callbacks.kill._target_=helpers.sigterm_at.SigtermAt",
    "+callbacks.kill.step=27",  # in the middle of epoch 1 (20 steps an epoch)
    "+callbacks.kill.seed=1",
]


def sweep(args, sweep_dir, cache, grouped=True, env=None) -> subprocess.CompletedProcess:
    """``python train.py -m ...`` into ``sweep_dir``, with ``launcher=grouped`` unless not."""
    launcher = ["launcher=grouped"] if grouped else []
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", *launcher, *args, *QUIET]
    cmd += [f"hydra.sweep.dir={sweep_dir}", f"paths.cache_dir={cache}"]
    return subprocess.run(
        cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})}
    )


def members(sweep_dir):
    """The run directories of a sweep, in job order."""
    return sorted(
        (p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()),
        key=lambda p: int(p.name.split("-")[0]),
    )


def without(metrics, *keys):
    return {k: v for k, v in metrics.items() if k not in keys}


def history(run_dir):
    return pd.read_csv(run_dir / "history.csv").drop(columns="elapsed_s")


@pytest.fixture(scope="module")
def grouped(tmp_path_factory, cache_dir):
    sweep_dir = tmp_path_factory.mktemp("grouped") / "sweep"
    result = sweep([*JOB, SEEDS], sweep_dir, cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir, result


@pytest.fixture(scope="module")
def job_by_job(tmp_path_factory, cache_dir):
    sweep_dir = tmp_path_factory.mktemp("basic") / "sweep"
    result = sweep([*JOB, SEEDS], sweep_dir, cache_dir, grouped=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir


def test_plan_groups_by_what_members_share():
    def job(optimizer, lr, seed, epochs=2):
        return {"optimizer": {"_target_": optimizer, "lr": lr}, "seed": seed,
                "trainer": {"max_epochs": epochs}, "data": {"root": f"/data/{seed}"}}  # fmt: skip

    configs = [
        job("Adam", 0.1, 0),
        job("SGD", 0.1, 0),
        job("Adam", 0.01, 1),
        job("Adam", 0.1, 2, 3),
    ]
    groups = plan_groups(configs)
    assert [g.jobs for g in groups] == [(0, 2), (1,), (3,)]  # budget and class must match
    assert differences([configs[0], configs[2]]) == ["optimizer.lr", "seed"]  # not data.root
    assert group_key(configs[0]) == group_key(configs[2])
    assert [g.jobs for g in plan_groups([configs[0]] * 5, max_members=2)] == [(0, 1), (2, 3), (4,)]
    lines = list(describe(groups, configs, [10, 11, 12, 13]))
    assert lines[0] == "grouped 4 jobs into 1 group(s) of several members and 2 job(s) on their own"
    assert lines[1] == "  group 0: 2 members (jobs #10 #12), differing in optimizer.lr, seed"
    assert lines[2].startswith("  job #11 trains alone: no other job of the sweep has the same")


def test_the_log_says_how_the_sweep_was_grouped(grouped):
    _, result = grouped
    log = result.stdout + result.stderr
    assert "grouped 3 jobs into 1 group(s) of several members and 0 job(s) on their own" in log
    assert "group 0: 3 members (jobs #0 #1 #2), differing in seed" in log


def test_each_member_writes_what_it_would_have_written_alone(
    grouped, job_by_job, tmp_path, cache_dir
):
    sweep_dir, _ = grouped
    runs = members(sweep_dir)
    assert [p.name for p in runs] == [f"{i}-adam-constant-s{i}" for i in range(3)]
    for number, (member, alone) in enumerate(zip(runs, members(job_by_job), strict=True)):
        metrics = read_metrics(member)
        assert metrics["group"] == {"id": 0, "size": 3, "mode": "sequential", "member": number}
        assert {"checkpoints", "history.csv", "diagnostics.csv", "run_info.json"} <= {
            p.name for p in member.iterdir()
        }
        assert without(metrics, "train_time_s", "group") == without(
            read_metrics(alone), "train_time_s", "group"
        )
        pd.testing.assert_frame_equal(history(member), history(alone))
    standalone = tmp_path / "alone"
    assert run_train([*JOB, "seed=1", *QUIET], standalone, cache_dir).returncode == 0
    assert read_metrics(standalone).get("group") is None
    assert without(read_metrics(standalone), "train_time_s", "group") == without(
        read_metrics(runs[1]), "train_time_s", "group"
    )


def test_the_report_of_a_grouped_sweep_is_the_report_of_the_sweep_job_by_job(
    grouped, job_by_job, tmp_path
):
    sweep_dir, _ = grouped
    tables = []
    for name, runs in (("grouped", sweep_dir), ("basic", job_by_job)):
        assert report_main([str(runs), "--out", str(tmp_path / name)]) == 0
        table = pd.read_csv(tmp_path / name / "summary.csv")
        tables.append(
            table.drop(columns=[c for c in table if c.startswith(("train_time_s_", "seconds_to"))])
        )
    pd.testing.assert_frame_equal(*tables)


def test_diverging_and_failing_members_do_not_stop_their_group(tmp_path, cache_dir):
    crash_seed_1 = [
        "+callbacks.boom._target_=helpers.sigterm_at.FailAt",
        "+callbacks.boom.step=1",
        "+callbacks.boom.seed=1",
    ]
    args = ["data=digits", "model=mlp", "optimizer=sgd", "optimizer.lr=0.05,1e6", "seed=0,1"]
    result = sweep(
        [*args, "trainer.max_epochs=1", *crash_seed_1], tmp_path, cache_dir, env=WITH_HELPERS
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "group 0: 4 members" in result.stdout + result.stderr
    runs = members(tmp_path)
    status = {
        p.name: (read_metrics(p) or {}).get("status") for p in runs if (p / "metrics.json").exists()
    }
    assert status == {"0-sgd-constant-s0": "completed", "2-sgd-constant-s0": "diverged"}
    assert result.stderr.count("planned crash at step 1") == 2  # both seed-1 members, each once
    assert result.stderr.strip().splitlines()[-1] == (
        "error: 2 of 4 jobs failed (1-sgd-constant-s1, 3-sgd-constant-s1): see their train.log "
        f"in {tmp_path}"
    )
    assert read_metrics(runs[2])["group"]["member"] == 2


def test_sigterm_stops_the_group_and_the_same_command_resumes_it(grouped, tmp_path, cache_dir):
    args = [*JOB, SEEDS, *SIGTERM_IN_SEED_1]
    first = sweep(args, tmp_path, cache_dir, env=WITH_HELPERS)
    assert first.returncode == 143
    (line,) = [line for line in first.stderr.splitlines() if line.startswith("interrupted:")]
    assert line.startswith("interrupted: SIGTERM at step 27; checkpoint saved: ")
    resume = ["python", str(ROOT / "train.py"), "-m", "launcher=grouped", *args, *QUIET]
    resume += [f"paths.cache_dir={cache_dir}", f"hydra.sweep.dir={tmp_path}"]
    assert line.endswith(f"; to resume, run: {shlex.join(resume)}")  # what the second run is
    runs = members(tmp_path)
    assert [p.name for p in runs] == ["0-adam-constant-s0", "1-adam-constant-s1"]  # s2 not begun
    assert (runs[0] / "metrics.json").exists() and not (runs[1] / "metrics.json").exists()
    finished = (runs[0] / "checkpoints" / "last.ckpt").stat().st_mtime_ns

    second = sweep(args, tmp_path, cache_dir, env=WITH_HELPERS)
    assert second.returncode == 0, second.stderr[-3000:]
    # The finished member trained nothing: its checkpoint was not written again.
    assert (runs[0] / "checkpoints" / "last.ckpt").stat().st_mtime_ns == finished
    reference, _ = grouped
    for again, uninterrupted in zip(members(tmp_path), members(reference), strict=True):
        assert without(read_metrics(again), "train_time_s") == without(
            read_metrics(uninterrupted), "train_time_s"
        )
        pd.testing.assert_frame_equal(history(again), history(uninterrupted))


def test_a_long_group_keeps_its_memory_flat(tmp_path, cache_dir):
    """25 tiny members in one process: resident memory after the 25th is within a few percent
    of that after the 5th (nothing of a finished member stays alive)."""
    rss_file = tmp_path / "rss.txt"
    probe = [
        "+hydra.callbacks.rss._target_=timing.RecordRSS",
        f"+hydra.callbacks.rss.path={rss_file}",
    ]
    tiny = [
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "callbacks.diagnostics=null",
    ]
    seeds = "seed=" + ",".join(map(str, range(25)))
    args = ["data=digits", "model=mlp", "trainer.max_epochs=1", *tiny, seeds, *probe]
    result = sweep(args, tmp_path / "sweep", cache_dir, env=WITH_BENCHMARKS)
    assert result.returncode == 0, result.stderr[-3000:]
    rss = [int(line) for line in rss_file.read_text().split()]
    assert len(rss) == 25
    # Allocator noise moves RSS by a few MB between jobs; a leak of one member's trainer,
    # module and loggers would add up to far more over 20 members.
    assert rss[24] <= rss[4] * 1.05, json.dumps(rss)
