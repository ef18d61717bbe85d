"""OmegaConf resolvers the configs use; registered by the entry points before Hydra composes."""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import OmegaConf


def sweep_values(values: Sequence[object]) -> str:
    """A list as a Hydra sweep override value: ``[sgd, adam]`` → ``"sgd,adam"``."""
    return ",".join(str(v) for v in values)


def job_devices(accelerator: str) -> int | list[int]:
    """``trainer.devices`` of a one-device run: its own GPU when several jobs share a node, see
    :func:`optstudy.distributed.job_gpu`."""
    from optstudy.distributed.devices import gpu_count, job_gpu, job_number

    return job_gpu(accelerator, job_number(), gpu_count())


def register() -> None:
    """Register ``${sweep:<list>}``, ``${job_gpu:<accelerator>}``, ``${gpu_count:}`` and
    ``${run_name:<optimizer>,<scheduler>,<seed>}`` (idempotent)."""
    from optstudy.artifacts import run_dir_name
    from optstudy.distributed.devices import gpu_count

    resolvers = {
        "sweep": sweep_values,
        "job_gpu": job_devices,
        "gpu_count": gpu_count,
        "run_name": run_dir_name,
    }
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
