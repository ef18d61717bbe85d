"""Who starts the processes of a DDP run: Lightning (one run), or SLURM / submitit (a sweep)."""

from __future__ import annotations

import os

import pytorch_lightning as pl
from pytorch_lightning.strategies.launchers import _SubprocessScriptLauncher

from optstudy.errors import ConfigError


def submitit_tasks() -> int:
    """Number of processes (tasks) of the submitit job this process belongs to (1 outside)."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return 1
    import submitit

    return submitit.JobEnvironment().num_tasks


def join_submitit_tasks() -> None:
    """In a job of ``launcher=submitit_local`` with several tasks, export the variables of
    ``torch.distributed`` (rank, world size, address) so that Lightning's DDP takes the tasks as
    its processes, as it takes the tasks of a SLURM job through its ``SLURMEnvironment``."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "local" or "LOCAL_RANK" in os.environ:
        return
    from submitit.helpers import TorchDistributedEnvironment

    env = TorchDistributedEnvironment()
    if env.world_size > 1:
        env.export(set_cuda_visible_devices=False)


# Environment variables in which launchers give a process its place in a run of several:
# torchrun, Lightning's own DDP launcher, SLURM (and submitit, once joined).
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")


def launched_as_rank_zero() -> bool:
    """Whether this process is the first of its run, as its launcher says in the environment
    (known before the trainer exists; call after :func:`join_submitit_tasks`)."""
    return all(os.environ.get(name, "0") in ("", "0") for name in RANK_VARIABLES)


def _in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def check_processes(trainer: pl.Trainer) -> None:
    """Raise :class:`ConfigError` when the run's processes cannot be started as configured: a
    sweep job whose trainer would start DDP processes itself (Lightning re-runs the command
    line, which in a sweep is the whole sweep), or a submitit job whose number of tasks is not
    the trainer's number of processes."""
    launcher = trainer.strategy.launcher
    environment = getattr(trainer.strategy, "cluster_environment", None)
    starts_own = isinstance(launcher, _SubprocessScriptLauncher) and not (
        environment is not None and environment.creates_processes_externally
    )
    if starts_own and _in_sweep():
        raise ConfigError(
            f"a DDP run of {trainer.world_size} processes cannot start them in a sweep job; let "
            "the launcher start them: launcher=submitit_local (or submitit_slurm) "
            f"hydra.launcher.tasks_per_node={trainer.num_devices}"
        )
    tasks = submitit_tasks()
    if tasks > 1 and tasks != trainer.world_size:
        raise ConfigError(
            f"the submitit job has {tasks} tasks but the trainer runs {trainer.world_size} "
            f"process(es): use trainer=ddp (or ddp_cpu) with trainer.devices={tasks}, or "
            "hydra.launcher.tasks_per_node=1"
        )
