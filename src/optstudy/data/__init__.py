"""Data: sources decode raw files once into a cache; one tensor datamodule serves batches."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate

from optstudy.data.datamodule import TensorDataModule


def build_datamodule(data_cfg: Any, seed: int, augment_cfg: Any = None) -> TensorDataModule:
    """Build the datamodule of a composed ``data`` config; ``seed`` orders the batches and
    ``augment_cfg`` (an ``augment`` config, or None for none) augments the training batches."""
    return TensorDataModule(
        source=instantiate(data_cfg.source),
        cache_dir=data_cfg.cache_dir,
        batch_size=data_cfg.batch_size,
        eval_batch_size=data_cfg.eval_batch_size,
        val_fraction=data_cfg.val_fraction,
        split_seed=data_cfg.split_seed,
        shuffle_seed=seed,
        channels=data_cfg.channels,
        image_size=data_cfg.image_size,
        num_classes=data_cfg.num_classes,
        mean=data_cfg.mean,
        std=data_cfg.std,
        augment=instantiate(augment_cfg) if augment_cfg is not None else None,
    )
