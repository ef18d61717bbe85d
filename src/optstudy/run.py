"""One training run: config in, run directory (history.csv, metrics.json, checkpoints) out."""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import ModelCheckpoint, OnExceptionCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from optstudy.atomic import atomic_write_json
from optstudy.callbacks import EpochHistory, ResumableRun, resume_from
from optstudy.data import build_datamodule
from optstudy.distributed.processes import check_processes, join_submitit_tasks
from optstudy.errors import RunInterrupted
from optstudy.module import ImageClassifier
from optstudy.optim import group_split, optimizer_factory
from optstudy.provenance import provenance
from optstudy.rundir import check_writable
from optstudy.tracking import log_config, plain_config

log = logging.getLogger(__name__)

# Config groups whose chosen option names go into metrics.json.
CHOICE_GROUPS = ("optimizer", "scheduler", "model", "data", "augment")


# Config keys that say where things are or how progress is shown, not what is computed: a
# run may resume under different values of these.
NOT_IDENTITY = (
    "paths",
    "callbacks",
    "logger",
    "trainer.default_root_dir",
    "trainer.enable_progress_bar",
    "data.root",
    "data.cache_dir",
    "data.source.root",
    "data.source.search_dirs",
    "data.source.download_dir",
    "data.source.download",
)


def run_identity(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config minus :data:`NOT_IDENTITY`: two runs with equal identities compute
    the same thing, so one may resume the other's checkpoint."""
    identity = copy.deepcopy(cfg)
    with open_dict(identity):
        for key in NOT_IDENTITY:
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(identity, parent) if parent else identity
            if isinstance(node, DictConfig) and leaf in node:
                del node[leaf]
    return plain_config(identity)  # resolved; no secret goes into checkpoints


def peak_gpu_memory_mb(device: torch.device) -> float | None:
    """The most GPU memory torch has held on ``device`` in this process, in MiB (None on CPU)."""
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    return [instantiate(c) for c in (group or {}).values() if c is not None]


def train(cfg: DictConfig, out_dir: Path, choices: Mapping[str, str]) -> dict[str, Any]:
    """Train and test a validated config (see :func:`optstudy.validation.validate`) and write
    ``metrics.json`` into ``out_dir``; return its content."""
    out_dir = Path(out_dir)
    check_writable(out_dir)
    identity = run_identity(cfg)
    callbacks = [*_instantiate_all(cfg.callbacks), ResumableRun(identity)]
    checkpoints = [
        *(cb.ckpt_path for cb in callbacks if isinstance(cb, OnExceptionCheckpoint)),
        *(
            cb.format_checkpoint_name({}, cb.CHECKPOINT_NAME_LAST)
            for cb in callbacks
            if isinstance(cb, ModelCheckpoint)
        ),
    ]
    resume = resume_from(checkpoints, identity)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = build_datamodule(cfg.data, cfg.seed, cfg.get("augment"))
    datamodule.prepare_data()  # find, verify and decode the data before anything else runs
    source = datamodule.source
    record = provenance(Path(cfg.paths.root_dir), source.name, source.fingerprint())
    module = ImageClassifier(
        net=instantiate(cfg.model),
        optimizer=optimizer_factory(cfg.optimizer),
        param_split=group_split(cfg.optimizer),
        scheduler=cfg.scheduler,
        num_classes=cfg.data.num_classes,
        decay_norm_and_bias=cfg.decay_norm_and_bias,
        divergence_factor=cfg.divergence_factor,
        channels_last=cfg.channels_last,
        compile=cfg.compile,
    )
    join_submitit_tasks()  # the tasks of a submitit job are the processes of a DDP run
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=_instantiate_all(cfg.logger)
    )
    check_processes(trainer)
    writes = trainer.is_global_zero  # the other processes of a DDP run write no files
    log_config(trainer.loggers, cfg)
    if resume:
        log.info("resuming from %s", resume)
    # From here on the run directory changes: a run without metrics.json has not finished.
    if writes:
        (out_dir / "metrics.json").unlink(missing_ok=True)
        atomic_write_json(out_dir / "run_info.json", record)
    # The checkpoint folder exists even when no checkpoint gets written (a run that diverges
    # in its first epoch), so pipelines that declare it as an output find it.
    for path in checkpoints:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            # With an interrupt checkpoint configured, Lightning looks for a "last" checkpoint
            # itself when ckpt_path is None and warns; resume_from has already looked.
            warnings.filterwarnings("ignore", message=r"`\.fit\(ckpt_path=None\)`")
            warnings.filterwarnings("ignore", message=r"\.fit\(ckpt_path=\"last\"\) is set")
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    except SIGTERMException as exc:
        raise RunInterrupted(
            f"SIGTERM at step {trainer.global_step}; checkpoint saved in {out_dir}, "
            "run the same command to resume"
        ) from exc
    history = next(cb for cb in callbacks if isinstance(cb, EpochHistory))
    train_time = history.elapsed()
    if writes:
        atomic_write_json(out_dir / "classes.json", datamodule.classes)
    has_test = datamodule.split_sizes()["test"] > 0  # an image folder may have no test split
    test = (
        trainer.test(module, datamodule=datamodule, verbose=False)[0]
        if has_test and not module.diverged
        else {}
    )

    rows = history.rows
    val_accs = [row["val_acc"] for row in rows]
    metrics = {
        "status": "diverged" if module.diverged else "completed",
        "best_val_acc": max(val_accs, default=None),
        "final_val_acc": val_accs[-1] if val_accs else None,
        "final_val_loss": rows[-1]["val_loss"] if rows else None,
        "final_train_loss": rows[-1]["train_loss"] if rows else None,
        "test_acc": test.get("test_acc"),
        "test_loss": test.get("test_loss"),
        "epochs": len(rows),
        "steps": trainer.global_step,
        "train_time_s": round(train_time, 3),
        "seed": cfg.seed,
        "lr": cfg.optimizer.get("lr"),
        "torch_threads": torch.get_num_threads(),
        "peak_gpu_memory_mb": peak_gpu_memory_mb(module.device),
        **{group: choices.get(group) for group in CHOICE_GROUPS},
    }
    if writes:
        atomic_write_json(out_dir / "metrics.json", metrics)
    log.info("run finished: %s", metrics)
    return metrics
