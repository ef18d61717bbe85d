"""The SLURM job array that ``launcher=submitit_slurm`` submits: the composed launcher config,
named as hydra-submitit-launcher passes it to submitit, written by submitit's own sbatch writer.
There is no cluster here: a stand-in ``srun`` on PATH lets submitit build its SLURM executor."""

import os

import pytest
import submitit
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

from optstudy.cli import compose_job


def sbatch_text(tmp_path, monkeypatch, overrides: list[str], jobs: int) -> str:
    """The sbatch file of a sweep of ``jobs`` runs with ``launcher=submitit_slurm``."""
    (tmp_path / "srun").write_text("#!/bin/sh\n")
    (tmp_path / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    cfg = compose_job(["launcher=submitit_slurm", f"hydra.sweep.dir={tmp_path}", *overrides])
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert params.pop("_target_").endswith("SlurmLauncher")
    executor = submitit.AutoExecutor(
        folder=params.pop("submitit_folder"),
        cluster="slurm",
        slurm_max_num_timeout=params.pop("max_num_timeout"),
    )
    generic = set(OmegaConf.structured(BaseQueueConf).keys())  # the plugin's naming
    executor.update_parameters(
        **{k if k in generic else f"slurm_{k}": v for k, v in params.items()}
    )
    executor._executor.parameters["map_count"] = jobs  # as submitit does for an array
    return executor._executor._make_submission_file_text("python -m submitit.core._submit", "0")


def test_defaults_one_gpu_four_hours_64_jobs_at_once(tmp_path, monkeypatch):
    text = sbatch_text(tmp_path, monkeypatch, [], jobs=100)
    for line in ("--gpus-per-node=1", "--ntasks-per-node=1", "--time=240", "--array=0-99%64"):
        assert f"#SBATCH {line}\n" in text
    assert "--partition" not in text  # the cluster's default partition
    assert f"--output={tmp_path}/.submitit/" in text  # submitit's logs inside the sweep dir


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("hydra.launcher.partition=gpu", "--partition=gpu"),
        ("hydra.launcher.gpus_per_node=4", "--gpus-per-node=4"),
        ("hydra.launcher.tasks_per_node=4", "--ntasks-per-node=4"),
        ("hydra.launcher.timeout_min=30", "--time=30"),
        ("hydra.launcher.array_parallelism=8", "--array=0-17%8"),
        ("hydra.launcher.account=lab", "--account=lab"),
        ("+hydra.launcher.additional_parameters.qos=high", "--qos=high"),
    ],
)
def test_every_setting_is_overridable(tmp_path, monkeypatch, override, line):
    assert f"#SBATCH {line}\n" in sbatch_text(tmp_path, monkeypatch, [override], jobs=18)
