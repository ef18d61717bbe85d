"""A study survives bad runs: divergence, interruption and resume, unsafe checkpoints."""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, comparable, read_history, read_metrics, run_train, snapshot

from optstudy.atomic import atomic_write_text
from optstudy.provenance import git_state
from optstudy.study.collect import load_run

TESTS = ROOT / "tests"
# vgg_small has dropout: the resumed run must restore the RNG states too.
RUN = [
    "data=digits",
    "model=vgg_small",
    "optimizer=adam",
    "trainer.max_epochs=3",
    "trainer.log_every_n_steps=5",
    "callbacks.diagnostics.interval=4",
]
# A real SIGTERM, sent by the run to itself in the middle of epoch 1 (20 steps per epoch).
SIGTERM_AT_27 = ["+callbacks.kill._target_=helpers.sigterm_at.SigtermAt", "+callbacks.kill.step=27"]
WITH_HELPERS = {"PYTHONPATH": str(TESTS)}
TINY = ["data=digits", "model=mlp", "trainer.max_epochs=1"]


def _logged_steps(run_dir):
    with open(run_dir / "csv" / "metrics.csv") as f:
        return [int(row["step"]) for row in csv.DictReader(f) if row["train_loss_step"]]


def test_sigterm_then_resume_ends_like_an_uninterrupted_run(tmp_path, cache_dir):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert run_train(RUN, full, cache_dir).returncode == 0

    first = run_train([*RUN, *SIGTERM_AT_27], cut, cache_dir, env=WITH_HELPERS)
    assert first.returncode == 143
    assert first.stderr.strip().splitlines()[-1].startswith("interrupted: SIGTERM at step 27")
    assert not (cut / "metrics.json").exists()
    saved = torch.load(cut / "checkpoints" / "interrupted.ckpt", weights_only=True)
    assert saved["global_step"] == 27 and saved["epoch"] == 1  # in the middle of an epoch

    second = run_train([*RUN, *SIGTERM_AT_27], cut, cache_dir, env=WITH_HELPERS)
    assert second.returncode == 0, second.stderr[-2000:]
    assert comparable(read_metrics(cut)) == comparable(read_metrics(full))
    assert read_history(cut) == read_history(full)
    diagnostics = (full / "diagnostics.csv").read_text()
    assert (cut / "diagnostics.csv").read_text() == diagnostics
    # Header, then steps 0, 4, …, 56 × ("all", 6 convs, 6 batch norms, 2 linear layers).
    assert len(diagnostics.splitlines()) == 1 + 15 * 15
    assert _logged_steps(cut) == _logged_steps(full)  # the step log survived the resume
    assert len(_logged_steps(full)) == 12
    assert not (cut / "checkpoints" / "interrupted.ckpt").exists()  # removed once finished


def _trained_files(run_dir):
    """What training writes, with each file's modification time: a run that trains again
    (even one that recomputes the same numbers) rewrites the checkpoints and writes new
    elapsed times into history.csv."""
    paths = [*sorted((run_dir / "checkpoints").iterdir()), run_dir / "history.csv"]
    paths.append(run_dir / "diagnostics.csv")
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in paths}


def _step_log(run_dir):
    with open(run_dir / "csv" / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if v} for row in csv.DictReader(f)]


def test_rerunning_a_finished_run_trains_nothing(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    args = ["data=digits", "model=mlp", "trainer.max_epochs=2"]
    assert run_train(args, run_dir, cache_dir).returncode == 0
    before, trained, logged = read_metrics(run_dir), _trained_files(run_dir), _step_log(run_dir)
    assert {"last.ckpt", "best.ckpt", "history.csv", "diagnostics.csv"} == set(trained)
    again = run_train(args, run_dir, cache_dir)
    assert again.returncode == 0 and "resuming from" in again.stdout + again.stderr
    assert comparable(read_metrics(run_dir)) == comparable(before)
    assert _trained_files(run_dir) == trained  # not one step trained again
    assert len(read_history(run_dir)) == 2
    # It evaluates the test split again (metrics.json is rewritten from it) and logs only that.
    test_row = next(row for row in logged if "test_acc" in row)
    assert _step_log(run_dir) == [*logged, test_row]


def test_a_refused_rerun_changes_nothing(tmp_path, cache_dir):
    """A finished Adam run (a sweep's job), then two runs its checkpoint refuses: SGD in the same
    run directory, and the sweep again with fewer epochs than it trained. Its files stay as
    they were, and the report still reads Adam and 2 epochs."""
    sweep = tmp_path / "sweep"
    run_dir = sweep / "job"
    job = ["-m", f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=job"]
    two_epochs = [*TINY[:-1], "trainer.max_epochs=2"]
    assert run_train([*job, *two_epochs], run_dir, cache_dir).returncode == 0
    finished = snapshot(run_dir)

    other = run_train([*two_epochs, "optimizer=sgd"], run_dir, cache_dir)
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert (
        other.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "last.ckpt belongs to a run with another config; use a new run directory "
            "(hydra.run.dir=...) or delete that checkpoint"
        )
    )
    assert snapshot(run_dir) == finished  # byte for byte, the job's log included

    fewer = run_train([*job, *TINY], run_dir, cache_dir)
    assert fewer.returncode == 1  # its one job failed: every job of the sweep (README)
    assert "has trained 2 epochs, more than trainer.max_epochs=1" in fewer.stderr
    log = "train.log"  # the sweep logs the failed job into the job's log
    assert {k: v for k, v in snapshot(run_dir).items() if k != log} == {
        k: v for k, v in finished.items() if k != log
    }
    row = load_run(run_dir)
    assert (row["optimizer"], row["cfg.trainer.max_epochs"], row["epochs"]) == ("adam", 2, 2)


class Payload:
    """Stands for any object a checkpoint could smuggle in through pickle."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_a_checkpoint_with_arbitrary_objects_is_refused(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {}, "payload": Payload()}, run_dir / "checkpoints" / "last.ckpt")
    result = run_train(TINY, run_dir, cache_dir)
    assert result.returncode == 2
    assert (
        result.stderr.startswith("error: refusing to resume from")
        and "Traceback" not in result.stderr
    )
    assert not (run_dir / "metrics.json").exists()


def test_a_diverging_run_does_not_stop_its_sweep(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable, str(ROOT / "train.py"), "-m", "data=digits", "model=mlp", "optimizer=sgd",
        "optimizer.lr=0.01,1000000.0,0.1", "trainer.max_epochs=2", f"hydra.sweep.dir={sweep}",
        "callbacks.diagnostics.interval=1",
        f"paths.cache_dir={cache_dir}", "callbacks.progress_bar=null",
        "trainer.enable_progress_bar=false",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = sorted(sweep.glob("*/metrics.json"))
    assert len(runs) == 3
    by_lr = {m["lr"]: m for m in (json.loads(p.read_text()) for p in runs)}
    assert by_lr[1000000.0]["status"] == "diverged" and by_lr[1000000.0]["test_acc"] is None
    diverged = next(p.parent for p in runs if json.loads(p.read_text())["lr"] == 1000000.0)
    assert (diverged / "history.csv").read_text().startswith("epoch,lr,")  # DVC's declared outputs
    assert (diverged / "diagnostics.csv").read_text().startswith("step,epoch,layer,")
    assert (diverged / "checkpoints").is_dir()
    assert by_lr[0.01]["status"] == by_lr[0.1]["status"] == "completed"
    assert by_lr[0.1]["epochs"] == 2


def test_debug_flag_shows_the_traceback(tmp_path, cache_dir):
    result = run_train(
        ["optimizer.lr=-1"], tmp_path / "run", cache_dir, env={"OPTSTUDY_DEBUG": "1"}
    )
    assert (
        result.returncode != 0 and "Traceback" in result.stderr and "ConfigError" in result.stderr
    )


def test_debug_flag_makes_a_failing_job_stop_its_sweep(tmp_path, cache_dir):
    """Without the flag such a job is reported and the sweep goes on (test_report.py)."""
    sweep = tmp_path / "sweep"
    args = ["-m", *TINY, "optimizer.lr=-1,0.1", f"hydra.sweep.dir={sweep}"]
    result = run_train(args, sweep / "unused", cache_dir, env={"OPTSTUDY_DEBUG": "1"})
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ConfigError: optimizer.lr=-1" in result.stderr
    assert "the sweep goes on" not in result.stderr
    jobs = [p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert jobs == ["0-adam-constant-s0"]  # the second job never started
    assert not (sweep / "0-adam-constant-s0" / "metrics.json").exists()


def test_run_records_code_data_and_package_versions(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    assert run_train(TINY, run_dir, cache_dir).returncode == 0
    info = json.loads((run_dir / "run_info.json").read_text())
    assert (
        info["packages"]["torch"] == torch.__version__.split("+")[0]
        or info["packages"]["torch"] == torch.__version__
    )
    assert info["data"]["name"] == "digits" and info["data"]["fingerprint"].startswith("sklearn-")
    assert info["python"] == sys.version.split()[0]
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True)
    if head.returncode:  # not run from a git checkout: nothing to record
        assert (info["git_commit"], info["git_dirty"]) == (None, None)
    else:
        diff = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", "HEAD"])
        expected = (head.stdout.decode().strip(), diff.returncode == 1)
        assert (info["git_commit"], info["git_dirty"]) == expected


def test_git_state_is_the_commit_and_whether_tracked_files_differ_from_it(tmp_path):
    def git(*args):
        return subprocess.run(
            ["git", "-C", str(tmp_path), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    assert git_state(tmp_path) == {"git_commit": None, "git_dirty": None}  # no repository
    git("init", "-q")
    (tmp_path / "tracked.txt").write_text("a")
    git("add", "tracked.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    clean = {"git_commit": git("rev-parse", "HEAD"), "git_dirty": False}
    assert git_state(tmp_path) == clean
    (tmp_path / "untracked.txt").write_text("b")  # not part of the code the commit names
    assert git_state(tmp_path) == clean
    (tmp_path / "tracked.txt").write_text("changed")
    assert git_state(tmp_path) == {**clean, "git_dirty": True}


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")

    class Boom(Exception):
        pass

    def failing(tmp):
        tmp.write_text("half")
        raise Boom

    from optstudy.atomic import atomic_write

    with pytest.raises(Boom):
        atomic_write(target, failing)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
