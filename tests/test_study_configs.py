"""Every experiment and study config composes, validates and runs a few steps; Optuna drives
real sweeps (the launchers: test_scale_out.py and test_slurm_config.py)."""

import hashlib
import subprocess
import sys

import pytest
import yaml
from conftest import CONF, ROOT, read_metrics, run_train
from hydra.core.override_parser.overrides_parser import OverridesParser

from optstudy.cli import compose, compose_job
from optstudy.study.__main__ import protocol_and_spaces
from optstudy.study.protocol import configuration, defaults_jobs, final_jobs, tuning_jobs
from optstudy.validation import validate

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
# Every study file but the shared bases (base.yaml, tuned.yaml: not studies themselves).
STUDIES = sorted(p.stem for p in (CONF / "study").glob("*.yaml") if p.stem not in ("base", "tuned"))
TUNED_STUDIES = [s for s in STUDIES if "tuning:" in (CONF / "study" / f"{s}.yaml").read_text()]
PLAIN_STUDIES = [s for s in STUDIES if s not in TUNED_STUDIES]
# Few steps of every run: the shape of the config is tested, not its result.
FEW_STEPS = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


def study_sweep(study: str) -> tuple[str, dict[str, list[str]]]:
    """The sweep dir of ``study`` and the values of each key its ``hydra.sweeper.params`` sweeps,
    parsed by Hydra's override parser as the basic sweeper does."""
    cfg = compose_job([f"study={study}"])
    params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    parsed = OverridesParser.create().parse_overrides(params)
    values = {
        p.key_or_group: list(p.sweep_string_iterator())
        if p.is_sweep_override()
        else [p.get_value_element_as_str()]
        for p in parsed
    }
    return cfg.hydra.sweep.dir, values


def one_job_per_value(sweep: dict[str, list[str]]) -> list[list[str]]:
    """Jobs that together use every swept value once (the first value of the other keys)."""
    first = {key: values[0] for key, values in sweep.items()}
    jobs = {
        tuple(f"{k}={value if k == key else first[k]}" for k in sweep)
        for key, values in sweep.items()
        for value in values
    }
    return [list(job) for job in sorted(jobs)]


def test_the_five_reference_experiments_and_their_studies_exist():
    assert [e[:3] for e in EXPERIMENTS] == ["e1_", "e2_", "e3_", "e4_", "e5_"]
    assert "e2_cifar10_lenet_adaptive" in EXPERIMENTS
    assert {"default", "smoke", "e1", "e2", "e3", "e4", "e5"} <= set(STUDIES)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_validates(experiment):
    cfg, _ = compose([f"experiment={experiment}"])
    validate(cfg)
    comment = (CONF / "experiment" / f"{experiment}.yaml").read_text()
    assert f"E{experiment[1]} of SEEDS.md" in comment and "Differs" in comment


@pytest.mark.parametrize("study", STUDIES)
def test_a_named_study_is_named_after_its_file(study):
    """dvc.yaml names the study file once and derives the rest from its study.name."""
    cfg, _ = compose([f"study={study}"])
    assert cfg.get("study") is None or cfg.study.name == study


@pytest.mark.parametrize("study", PLAIN_STUDIES)
def test_every_swept_value_of_a_study_composes_and_validates(study):
    sweep_dir, sweep = study_sweep(study)
    assert sweep_dir == f"results/{study}"
    assert len(sweep["seed"]) >= 2 and len(sweep) >= 2
    for job in one_job_per_value(sweep):
        cfg, _ = compose([f"study={study}", *job])
        validate(cfg)


def test_e4_study_sweeps_the_adagrad_grid_under_the_protocol():
    _, sweep = study_sweep("e4")
    assert sweep["optimizer.lr"] == ["0.01", "0.001", "0.0001"]
    cfg, choices = compose(["study=e4", "optimizer.lr=0.001"])
    assert (choices["optimizer"], choices["scheduler"], choices["callbacks"]) == (
        "adagrad", "plateau", "early_stopping"
    )  # fmt: skip
    assert cfg.trainer.gradient_clip_val == 1.0 and cfg.callbacks.early_stopping.patience == 3
    assert cfg.optimizer.weight_decay > 0


def test_e3_variants_are_the_three_runs_of_the_write_up():
    runs = {}
    for variant in ("e3_sgd_fixed", "e3_sgd_exp_decay", "e3_adam"):
        cfg, choices = compose(["experiment=e3_mnist_lr_strategies", f"variant={variant}"])
        runs[variant] = (choices["optimizer"], cfg.optimizer.lr, choices["scheduler"])
        assert (choices["data"], choices["model"], cfg.trainer.max_epochs) == ("mnist", "mlp", 10)
    assert runs == {
        "e3_sgd_fixed": ("sgd", 0.01, "constant"),
        "e3_sgd_exp_decay": ("sgd", 0.1, "exp_formula"),
        "e3_adam": ("adam", 0.001, "constant"),
    }


def test_cfg_job_prints_an_experiment():
    cmd = [sys.executable, str(ROOT / "train.py"), "--cfg", "job", "experiment=e4_adagrad_tuning"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    cfg = yaml.safe_load(result.stdout)
    assert cfg["optimizer"]["_target_"] == "torch.optim.Adagrad" and cfg["data"]["batch_size"] == 32


def test_studies_run_a_few_steps(tmp_path, cache_dir, tiny_mnist_dir, fashion_mnist_dir):
    """One job of each plain study (its per-run settings, default optimizer and seed) in one sweep;
    E3's MNIST is a small real-format copy."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mnist").symlink_to(tiny_mnist_dir)
    studies = [s for s in PLAIN_STUDIES if s not in ("e1", "e2")]
    args = ["-m", f"study={','.join(studies)}", *FEW_STEPS, f"paths.data_dir={tmp_path}/data"]
    result = run_train([*args, f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path / "r", cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted((tmp_path / "sweep").glob("*/metrics.json"))
    assert [read_metrics(j.parent)["status"] for j in jobs] == ["completed"] * len(studies)


def one_job(args: list[str], tmp_path, cache_dir) -> dict:
    """The metrics of a sweep (``-m``) of ``args`` that has one job (a study is a sweep)."""
    sweep = [*args, *FEW_STEPS, "seed=0", f"hydra.sweep.dir={tmp_path}/sweep"]
    result = run_train(["-m", *sweep], tmp_path / "unused", cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    (job,) = (tmp_path / "sweep").glob("*/metrics.json")
    return read_metrics(job.parent)


def test_e1_study_runs_a_few_steps(tmp_path, cache_dir, stars_dir, vgg16_weights_file):
    """E1 on a small 17-class image folder, at 32×32, with a stand-in weights file."""
    args = ["study=e1", "variant=e1_adam_staircase", f"data.root={stars_dir}"]
    args += ["data.image_size=32", f"model.weights={vgg16_weights_file}"]
    metrics = one_job(args, tmp_path, cache_dir)
    assert (metrics["status"], metrics["data"], metrics["model"]) == (
        "completed", "hollywood_stars", "vgg16_transfer"
    )  # fmt: skip


def test_e2_study_runs_a_few_steps(tmp_path, cache_dir, cifar_tarball):
    """E2 on a small real-format CIFAR-10 tarball."""
    md5 = hashlib.md5(cifar_tarball.read_bytes()).hexdigest()
    args = ["study=e2", "optimizer=adagrad", f"data.root={cifar_tarball}", f"data.md5={md5}"]
    metrics = one_job(args, tmp_path, cache_dir)
    assert (metrics["status"], metrics["data"], metrics["lr"]) == ("completed", "cifar10", 0.001)


def test_optuna_searches_the_lr_and_maximises_best_val_acc(tmp_path, cache_dir):
    """The search space here is a Hydra interval on the command line (the optimizer's own
    search_space and the sweeper's other settings: test_optuna_sweeper.py)."""
    args = ["-m", "hparams_search=lr_optuna", "data=digits", "model=mlp", "optimizer=sgd"]
    args += ["optimizer.lr=tag(log, interval(1e-4, 0.5))", "hydra.sweeper.n_trials=3"]
    args += [*FEW_STEPS, f"hydra.sweep.dir={tmp_path}/sweep"]
    result = run_train(args, tmp_path / "r", cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = [read_metrics(tmp_path / "sweep" / f"{n}-sgd-constant-s0") for n in range(3)]
    assert len({t["lr"] for t in trials}) == 3 and all(1e-4 <= t["lr"] <= 0.5 for t in trials)
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert best["trials"] == {"COMPLETE": 3}
    top = trials[best["best_trial"]]
    assert best["best_value"] == top["best_val_acc"] == max(t["best_val_acc"] for t in trials)
    assert best["best_params"] == {"optimizer.lr": top["lr"]}


@pytest.mark.parametrize("study", TUNED_STUDIES)
def test_every_run_of_a_tuned_study_composes_and_validates(study):
    """Each task × optimizer of every phase (its first and last tuning setting, the defaults
    and a final run) composes as the study sweeper composes it, and validates."""
    protocol, spaces = protocol_and_spaces([f"study={study}"])
    tune = list(tuning_jobs(protocol, spaces))
    selected = {
        configuration(job.optimizer, job.scheduler): {job.task.name: job.setting} for job in tune
    }
    jobs = [*tune[:: max(1, len(tune) // 12)], tune[-1], *defaults_jobs(protocol)]
    jobs += list(final_jobs(protocol, selected))[:4]
    for job in jobs:
        cfg, _ = compose([f"study={study}", *job.overrides()])
        assert (cfg.study.task, cfg.study.phase) == (job.task.name, job.phase)
        validate(cfg)
