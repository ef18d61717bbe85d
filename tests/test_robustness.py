"""A study survives bad runs: divergence, interruption and resume, unsafe checkpoints."""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, read_history, read_metrics, run_train, without_time

from optstudy.atomic import atomic_write_text

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
    assert without_time(read_metrics(cut)) == without_time(read_metrics(full))
    assert read_history(cut) == read_history(full)
    diagnostics = (full / "diagnostics.csv").read_text()
    assert (cut / "diagnostics.csv").read_text() == diagnostics
    # Header, then steps 0, 4, …, 56 × ("all", 6 convs, 6 batch norms, 2 linear layers).
    assert len(diagnostics.splitlines()) == 1 + 15 * 15
    assert _logged_steps(cut) == _logged_steps(full)  # the step log survived the resume
    assert len(_logged_steps(full)) == 12
    assert not (cut / "checkpoints" / "interrupted.ckpt").exists()  # removed once finished


def test_rerunning_a_finished_run_recomputes_nothing(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    args = ["data=digits", "model=mlp", "trainer.max_epochs=2"]
    assert run_train(args, run_dir, cache_dir).returncode == 0
    before = read_metrics(run_dir)
    again = run_train(args, run_dir, cache_dir)
    assert again.returncode == 0 and "resuming from" in again.stdout + again.stderr
    assert without_time(read_metrics(run_dir)) == without_time(before)
    assert len(read_history(run_dir)) == 2


def test_a_checkpoint_of_another_config_is_refused_and_nothing_is_lost(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    assert run_train(TINY, run_dir, cache_dir).returncode == 0
    metrics = (run_dir / "metrics.json").read_text()
    other = run_train([*TINY, "optimizer=sgd"], run_dir, cache_dir)
    assert other.returncode == 2
    assert (
        "belongs to a run with another config" in other.stderr and "Traceback" not in other.stderr
    )
    assert (run_dir / "metrics.json").read_text() == metrics


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


def test_run_records_code_data_and_package_versions(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    assert run_train(TINY, run_dir, cache_dir).returncode == 0
    info = json.loads((run_dir / "run_info.json").read_text())
    assert (
        info["packages"]["torch"] == torch.__version__.split("+")[0]
        or info["packages"]["torch"] == torch.__version__
    )
    assert info["data"]["name"] == "digits" and info["data"]["fingerprint"].startswith("sklearn-")
    assert "git_commit" in info and info["python"] == sys.version.split()[0]


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
