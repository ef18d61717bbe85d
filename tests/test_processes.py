"""Who starts a DDP run's processes, and which GPU a job of a sweep takes: checked on real
Lightning trainers and configs composed by Hydra, with the GPU count of a multi-GPU node."""

import pytest
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from pytorch_lightning.strategies.launchers import _SubprocessScriptLauncher

from optstudy.cli import compose_job
from optstudy.distributed import devices
from optstudy.distributed.devices import job_gpu
from optstudy.distributed.processes import check_processes
from optstudy.errors import ConfigError


@pytest.fixture
def hydra_job():
    """Set Hydra's config of a job (as a launcher does before each job); unset it afterwards."""

    def start(overrides: list[str]):
        cfg = compose_job(overrides)
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield start
    HydraConfig.instance().cfg = None


def ddp_trainer() -> pl.Trainer:
    """A two-process CPU DDP trainer (``trainer=ddp_cpu``); nothing starts before ``fit``."""
    return pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)


def test_a_ddp_run_on_its_own_lets_lightning_start_its_processes(hydra_job):
    hydra_job(["trainer=ddp_cpu"])
    trainer = ddp_trainer()
    # Lightning will start the second process itself (re-running the command line) ...
    assert isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher)
    assert not trainer.strategy.cluster_environment.creates_processes_externally
    assert trainer.world_size == 2
    # ... and outside a sweep that is allowed: no ConfigError, and nothing changed.
    assert check_processes(trainer) is None
    assert isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher)


def test_a_ddp_job_of_a_local_sweep_is_refused_with_what_to_do(hydra_job):
    hydra_job(["trainer=ddp_cpu", "hydra.mode=MULTIRUN"])
    with pytest.raises(ConfigError, match=r"launcher=submitit_local .*tasks_per_node=2"):
        check_processes(ddp_trainer())


def test_a_submitit_job_whose_tasks_are_not_the_trainers_processes_is_refused(monkeypatch):
    env = {"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_JOB_ID": "1", "SUBMITIT_LOCAL_NTASKS": "2"}
    env |= {"SUBMITIT_LOCAL_GLOBALID": "0", "SUBMITIT_LOCAL_LOCALID": "0"}
    env |= {"SUBMITIT_LOCAL_NODEID": "0", "SUBMITIT_LOCAL_JOB_NUM_NODES": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False)
    with pytest.raises(ConfigError, match="2 tasks but the trainer runs 1 process"):
        check_processes(trainer)


def test_jobs_sharing_a_node_take_its_gpus_in_turn(monkeypatch, hydra_job):
    monkeypatch.setattr(devices, "gpu_count", lambda: 2)  # a node with two GPUs
    taken = [hydra_job([f"hydra.job.num={n}"]).trainer.devices for n in range(4)]
    assert taken == [[0], [1], [0], [1]]
    assert hydra_job([]).trainer.devices == [0]  # a single run, which has no job number
    assert hydra_job(["hydra.job.num=3", "trainer=gpu"]).trainer.devices == [1]
    assert hydra_job(["hydra.job.num=3", "trainer=cpu"]).trainer.devices == 1
    assert hydra_job(["hydra.job.num=3", "trainer=ddp"]).trainer.devices == -1


@pytest.mark.parametrize(
    ("accelerator", "job", "gpus", "expected"),
    [("auto", 5, 4, [1]), ("gpu", 0, 1, [0]), ("auto", 5, 0, 1), ("cpu", 5, 4, 1)],
)
def test_job_gpu_is_the_job_number_modulo_the_visible_gpus(accelerator, job, gpus, expected):
    assert job_gpu(accelerator, job, gpus) == expected
