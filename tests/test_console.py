"""What a user reads: each mistake is one true `error:` line (exit code 2) before anything is
trained or created, interruptions and failures say what happened and what to do next, and a
run's console holds what the user needs and none of the known third-party noise."""

import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import warnings

import pytest
import torch
from conftest import CONF, ROOT, read_metrics, run_train
from formats import write_image_folder

from optstudy import quiet
from optstudy.data.cifar import CifarSource
from optstudy.data.mnist import FILES, IdxSource
from optstudy.data.prepare import main as prepare_main
from optstudy.errors import DataError
from optstudy.report import main as report_main

TESTS = ROOT / "tests"
WITH_HELPERS = {"PYTHONPATH": str(TESTS)}
DIGITS = ["data=digits", "model=mlp"]
OPTIMIZERS = ", ".join(sorted(p.stem for p in (CONF / "optimizer").glob("*.yaml")))
# Third-party lines the console must not show (quiet.py filters them at their source).
NOISE = (
    "LeafSpec",
    "💡 Tip",
    "TPU available",
    "Loading `train_dataloader`",
    "exists and is not empty",
    "dataloader is not resumable",
    "`training_step` returned `None`",
    "anonymous setting",
)


def last_line(result: subprocess.CompletedProcess) -> str:
    """The last line on stderr: what the user reads when a command stops."""
    return result.stderr.strip().splitlines()[-1]


def console(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["-m", "optimizer=sgd,adamm"],
            "error: optimizer=adamm (in optimizer=sgd,adamm) is not an option of optimizer: "
            f"choose one of {OPTIMIZERS} (did you mean optimizer=adam?)",
        ),
        (
            ["optimizer=adamm"],
            f"error: optimizer=adamm is not an option of optimizer: choose one of {OPTIMIZERS} "
            "(did you mean optimizer=adam?)",
        ),
        (
            ["study=smoke"],
            "error: study=smoke is a study, many runs, not one: run it with "
            "python -m optstudy.study run study=smoke (its runs, then its report)",
        ),
        (
            ["hparams_search=lr_optuna"],
            "error: hparams_search=lr_optuna is a search, many runs, not one: add -m to run it "
            "(python train.py -m hparams_search=lr_optuna)",
        ),
        (
            ["optimizer=sgd,adam"],
            "error: optimizer=sgd,adam sweeps over several values: add -m to run them all "
            "(python train.py -m ...), or give one value",
        ),
        (
            ['optimizer.lr="0.01"'],
            'error: optimizer.lr="0.01" is invalid: a string, must be a number > 0 '
            "(write optimizer.lr=0.01, without quotes)",
        ),
        (
            ["+trainer.max_epoch=1"],
            "error: trainer.max_epoch is not an argument of Trainer: did you mean "
            "trainer.max_epochs?",
        ),
        (
            ["scheduler=step", "scheduler.lightning.interval=batch"],
            "error: scheduler.lightning.interval=batch is invalid: must be epoch or step",
        ),
        (
            ["data.root=/nonexistent"],
            "error: data.root=/nonexistent does not exist: it must hold the four fashion_mnist "
            "IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
            "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each gzipped (.gz) or not); fix "
            "data.root, or drop it to use the default places",
        ),
    ],
    ids=[
        "sweep-choice",
        "choice",
        "study-no-m",
        "search-no-m",
        "sweep-no-m",
        "quoted-lr",
        "trainer-key",
        "interval",
        "root",
    ],
)
def test_a_mistake_is_one_line_and_exit_code_2_before_anything_trains(tmp_path, args, line):
    sweep_dir = tmp_path / "sweep"
    result = run_train([*args, f"hydra.sweep.dir={sweep_dir}"], tmp_path / "run", tmp_path)
    assert (result.returncode, last_line(result)) == (2, line), result.stderr[-2000:]
    assert "Traceback" not in console(result)
    assert not sweep_dir.exists()  # a sweep with a bad option creates nothing
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_trainer_without_a_gpu_is_one_line(tmp_path):
    result = run_train(["trainer=gpu"], tmp_path / "run", tmp_path)
    assert (result.returncode, last_line(result)) == (
        2,
        "error: trainer.accelerator=gpu needs a CUDA GPU, and torch sees none: use trainer=cpu, "
        "or trainer=auto (the GPU when there is one)",
    )


@pytest.mark.skipif(shutil.which("srun") is not None, reason="this machine is a SLURM node")
def test_the_slurm_launcher_off_a_cluster_is_one_line_and_creates_nothing(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "launcher=submitit_slurm", f"hydra.sweep.dir={sweep_dir}"]
    result = run_train(args, tmp_path / "run", tmp_path)
    assert (result.returncode, last_line(result)) == (
        2,
        "error: launcher=submitit_slurm submits to a SLURM cluster, but this machine has no "
        "srun: start the sweep on the cluster's login node, or run it here with "
        "launcher=submitit_local (the same submitit jobs as local processes) or launcher=joblib",
    )
    assert not sweep_dir.exists()


def test_a_sweep_whose_jobs_all_fail_exits_1_and_says_so_once(tmp_path, cache_dir):
    sweep_dir = tmp_path / "sweep"
    args = ["-m", *DIGITS, "optimizer.lr=-1,-2", f"hydra.sweep.dir={sweep_dir}"]
    result = run_train(args, tmp_path / "unused", cache_dir)
    assert (result.returncode, last_line(result)) == (
        1,
        "error: all 2 jobs failed (0-adam-constant-s0, 1-adam-constant-s0): see their train.log "
        f"in {sweep_dir}",
    )
    # Each job's error reaches the console once, and its log file.
    assert console(result).count("optimizer.lr=-1 is invalid") == 1
    log = (sweep_dir / "0-adam-constant-s0" / "train.log").read_text()
    assert "job failed: optimizer.lr=-1 is invalid: must be > 0" in log
    assert sorted(p.name for p in sweep_dir.iterdir()) == [
        "0-adam-constant-s0", "1-adam-constant-s0", "multirun.yaml"
    ]  # fmt: skip


def test_ctrl_c_says_where_the_checkpoint_is_and_the_command_that_resumes(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    sigint = ["+callbacks.kill._target_=helpers.sigterm_at.SigintAt", "+callbacks.kill.step=25"]
    args = [*DIGITS, "trainer.max_epochs=2", *sigint]
    first = run_train(args, run_dir, cache_dir, env=WITH_HELPERS)
    resume = shlex.join(["python", str(ROOT / "train.py"), *args])
    assert (first.returncode, last_line(first)) == (
        130,
        f"interrupted: Ctrl-C at step 25; checkpoint saved: {run_dir}/checkpoints/"
        f"interrupted.ckpt; to resume, run: {resume} paths.cache_dir={cache_dir} "
        "callbacks.progress_bar=null trainer.enable_progress_bar=false "
        f"hydra.run.dir={run_dir}",
    )
    # The printed command resumes the run mid-epoch, without Lightning's resumability warning.
    command = shlex.split(last_line(first).split("to resume, run: ")[1])
    second = subprocess.run(
        [sys.executable, *command[1:]], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, **WITH_HELPERS}, timeout=600,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"resuming from {run_dir}/checkpoints/interrupted.ckpt" in console(second)
    assert read_metrics(run_dir)["epochs"] == 2
    assert not any(noise in console(second) for noise in NOISE)


def test_a_diverged_run_says_why_it_stopped(tmp_path, cache_dir):
    args = [*DIGITS, "optimizer=sgd", "optimizer.lr=1e6", "trainer.max_epochs=2"]
    result = run_train(args, tmp_path / "run", cache_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    (line,) = [line for line in console(result).splitlines() if "diverged at step" in line]
    assert re.match(r"\[WARNING\] diverged at step \d+ \(epoch 0\): loss ", line), line
    assert line.endswith("training stops here and the run ends with status diverged")
    assert "module.divergence_factor 100.0 × the first loss" in line or "not finite" in line
    assert "`training_step` returned `None`" not in console(result)
    assert read_metrics(tmp_path / "run")["status"] == "diverged"


def test_a_default_run_console_fits_on_a_screen_without_noise(tmp_path, cache_dir):
    """The default callbacks (progress bar included), as a user runs it; then the same command
    again, which finds the finished run's checkpoints."""
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "train.py", *DIGITS, "trainer.max_epochs=2"]
    cmd += [f"hydra.run.dir={run_dir}", f"paths.cache_dir={cache_dir}"]
    for _ in ("first", "again"):
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        text = console(result)
        assert len(text.split("\n")) <= 50, text  # a progress bar's updates share a line
        assert not [noise for noise in NOISE if noise in text], text
        lines = result.stdout.splitlines()
        assert f"[INFO] run directory: {run_dir}" in lines
        assert (
            f"[INFO] results: {run_dir}/metrics.json, history.csv; compare runs with "
            f"python -m optstudy.report {tmp_path} --out <report folder>"
        ) in lines
        metrics = read_metrics(run_dir)
        assert (
            f"[INFO] run completed (2 epochs, {metrics['steps']} steps, "
            f"{metrics['train_time_s']:.1f} s): best val_acc {metrics['best_val_acc']:.4f}, "
            f"final val_acc {metrics['final_val_acc']:.4f}, test_acc {metrics['test_acc']:.4f}"
        ) in lines
    assert "resuming from" in text  # the second attempt found the first one's checkpoints


def test_prepare_checks_the_classes_against_the_preset(tmp_path, capsys, monkeypatch):
    root = write_image_folder(tmp_path / "stars", ["a", "b", "c"], per_class=2)
    monkeypatch.setenv("OPTSTUDY_ROOT", str(ROOT))
    args = ["data=hollywood_stars", f"data.root={root}", f"paths.cache_dir={tmp_path / 'c'}"]
    assert prepare_main(args) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: hollywood_stars: 3 classes found but data.num_classes is 17; set "
        "data.num_classes=3, or null to count them from the data"
    )


def test_report_target_is_an_accuracy_not_a_percentage(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        report_main([str(tmp_path), "--out", str(tmp_path / "out"), "--target", "85"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "error: argument --target: 85 is not in (0, 1]: write 85% as 0.85 (see --help)"
    )


def test_an_explicit_root_must_hold_the_data(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    idx = IdxSource(
        "m", ["0"], root=str(folder), search_dirs=[str(ROOT / "data" / "fashion_mnist")]
    )
    with pytest.raises(
        DataError, match=re.escape(f"data.root={folder} lacks {FILES['train_images']}, ")
    ):
        idx.files()  # not silently replaced by the data set in a search folder
    cifar = CifarSource(root=str(tmp_path / "x"), search_dirs=[str(folder)])
    with pytest.raises(DataError, match=re.escape(f"data.root={tmp_path / 'x'} does not exist (")):
        cifar.location()


def test_a_failed_download_leaves_no_empty_folder(tmp_path):
    closed = "http://127.0.0.1:9"  # the discard port: nothing answers there
    md5 = {f"{stem}.gz": "0" * 32 for stem in FILES.values()}
    idx = IdxSource("m", ["0"], base_url=closed, md5=md5, download_dir=str(tmp_path / "m"))
    cifar = CifarSource(url=f"{closed}/c.tar.gz", md5="0" * 32, download_dir=str(tmp_path / "c"))
    for locate in (idx.files, cifar.location):
        with pytest.raises(DataError, match=r"Download from .* failed"):
            locate()
    assert list(tmp_path.iterdir()) == []


def test_known_noise_is_filtered_and_anything_else_still_shows(caplog):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet.install()
        for message, category in [
            ("`isinstance(treespec, LeafSpec)` is deprecated, use …", FutureWarning),
            ("Checkpoint directory /x/checkpoints exists and is not empty.", UserWarning),
            ("`training_step` returned `None`. If this was on purpose, …", UserWarning),
            ("a new warning nobody has seen before", UserWarning),
            ("LeafSpec is deprecated", FutureWarning),  # not at the message's start
        ]:
            warnings.warn(message, category, stacklevel=1)
    assert [str(w.message) for w in caught] == [
        "a new warning nobody has seen before", "LeafSpec is deprecated"
    ]  # fmt: skip
    lightning = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    with caplog.at_level(logging.INFO):
        lightning.info("💡 Tip: For seamless cloud logging …")
        lightning.info("TPU available: False, using: 0 TPU cores")
        lightning.info("GPU available: False, used: False")
        lightning.info("TPU available: True, using: 8 TPU cores")
    assert caplog.messages == [
        "GPU available: False, used: False", "TPU available: True, using: 8 TPU cores"
    ]  # fmt: skip


def test_dvc_plots_output_is_ignored_by_git():
    result = subprocess.run(
        ["git", "check-ignore", "-q", "dvc_plots/index.html"], cwd=ROOT, capture_output=True
    )
    assert result.returncode == 0
