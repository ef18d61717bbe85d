"""Which GPU a job takes when several jobs of a sweep share a node (joblib, submitit_local)."""

from __future__ import annotations

# Accelerator names under which a run trains on a CUDA GPU when there is one.
GPU_ACCELERATORS = ("auto", "gpu", "cuda")


def gpu_count() -> int:
    """Number of CUDA GPUs this process sees (CUDA_VISIBLE_DEVICES applied)."""
    import torch

    return torch.cuda.device_count()


def job_number() -> int:
    """The Hydra job number of this process (``hydra.job.num``; 0 in a single run, which has
    none, and outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return 0
    return int(OmegaConf.select(HydraConfig.get(), "job.num", default=0))


def job_gpu(accelerator: str, job_num: int, gpus: int) -> int | list[int]:
    """Lightning ``devices`` of a one-device job: ``[job_num mod gpus]`` when it trains on a
    GPU and sees ``gpus`` of them, so parallel jobs spread over a node's GPUs; else ``1``."""
    if accelerator not in GPU_ACCELERATORS or gpus < 1:
        return 1
    return [job_num % gpus]
