"""One training run: config in, run directory (history.csv, metrics.json, checkpoints) out."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from optstudy.atomic import atomic_write_json
from optstudy.data import build_datamodule
from optstudy.module import ImageClassifier
from optstudy.rundir import check_writable
from optstudy.tracking import log_config

log = logging.getLogger(__name__)

# Config groups whose chosen option names go into metrics.json.
CHOICE_GROUPS = ("optimizer", "scheduler", "model", "data", "augment")


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    return [instantiate(c) for c in (group or {}).values() if c is not None]


def train(cfg: DictConfig, out_dir: Path, choices: Mapping[str, str]) -> dict[str, Any]:
    """Train and test a validated config (see :func:`optstudy.validation.validate`) and write
    ``metrics.json`` into ``out_dir``; return its content."""
    out_dir = Path(out_dir)
    check_writable(out_dir)
    (out_dir / "metrics.json").unlink(missing_ok=True)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = build_datamodule(cfg.data, cfg.seed, cfg.get("augment"))
    datamodule.prepare_data()  # find, verify and decode the data before anything else runs
    module = ImageClassifier(
        net=instantiate(cfg.model),
        optimizer=instantiate(cfg.optimizer),
        scheduler=cfg.scheduler,
        num_classes=cfg.data.num_classes,
        decay_norm_and_bias=cfg.decay_norm_and_bias,
        divergence_factor=cfg.divergence_factor,
    )
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=_instantiate_all(cfg.callbacks), logger=_instantiate_all(cfg.logger)
    )
    log_config(trainer.loggers, cfg)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    train_time = time.perf_counter() - start
    atomic_write_json(out_dir / "classes.json", datamodule.classes)
    has_test = datamodule.split_sizes()["test"] > 0  # an image folder may have no test split
    test = (
        trainer.test(module, datamodule=datamodule, verbose=False)[0]
        if has_test and not module.diverged
        else {}
    )

    history = next(cb.rows for cb in trainer.callbacks if hasattr(cb, "rows"))
    val_accs = [row["val_acc"] for row in history]
    metrics = {
        "status": "diverged" if module.diverged else "completed",
        "best_val_acc": max(val_accs, default=None),
        "final_val_acc": val_accs[-1] if val_accs else None,
        "final_val_loss": history[-1]["val_loss"] if history else None,
        "final_train_loss": history[-1]["train_loss"] if history else None,
        "test_acc": test.get("test_acc"),
        "test_loss": test.get("test_loss"),
        "epochs": len(history),
        "steps": trainer.global_step,
        "train_time_s": round(train_time, 3),
        "seed": cfg.seed,
        "lr": cfg.optimizer.get("lr"),
        "torch_threads": torch.get_num_threads(),
        **{group: choices.get(group) for group in CHOICE_GROUPS},
    }
    atomic_write_json(out_dir / "metrics.json", metrics)
    log.info("run finished: %s", metrics)
    return metrics
