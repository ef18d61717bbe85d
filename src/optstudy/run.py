"""One training run: config in, run directory out (see :mod:`optstudy.artifacts`).

build (data, module, trainer) → start → fit → test → write metrics.json
"""

from __future__ import annotations

import copy
import logging
import signal
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import ModelCheckpoint, OnExceptionCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from optstudy.artifacts import (
    CHOICE_GROUPS,
    CLASSES_FILE,
    COMPLETED,
    DIVERGED,
    EXTENDABLE,
    METRICS_FILE,
    NOT_EXPERIMENT,
    RUN_INFO_FILE,
    RunMetrics,
)
from optstudy.atomic import atomic_write_json
from optstudy.callbacks import EpochRecorder, ResumableRun, resume_from
from optstudy.console import outcome
from optstudy.data import TensorDataModule, build_datamodule
from optstudy.distributed.processes import check_processes, join_submitit_tasks
from optstudy.errors import RunInterrupted
from optstudy.grouping import current_group
from optstudy.module import ImageClassifier
from optstudy.optim import group_split, optimizer_factory
from optstudy.provenance import provenance
from optstudy.rundir import check_writable
from optstudy.tracking import log_config, plain_config

log = logging.getLogger(__name__)


def run_identity(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config without the keys that do not change what a run computes
    (:data:`~optstudy.artifacts.NOT_EXPERIMENT`, dropped before resolving: they may point at
    a running job's folders) and those a run may be continued under
    (:data:`~optstudy.artifacts.EXTENDABLE`, dropped after: other keys may interpolate them,
    e.g. a cosine schedule's length): a checkpoint may only be resumed by a run with the same
    identity."""
    identity = copy.deepcopy(cfg)
    with open_dict(identity):
        for key in NOT_EXPERIMENT:
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(identity, parent) if parent else identity
            if isinstance(node, DictConfig) and leaf in node:
                del node[leaf]
    plain = plain_config(identity)  # resolved; no secret goes into checkpoints
    for key in EXTENDABLE:
        *parents, leaf = key.split(".")
        node = plain
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return plain


def peak_gpu_memory_mb(device: torch.device) -> float | None:
    """The most GPU memory torch has held on ``device`` in this process, in MiB (None on CPU)."""
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


@dataclass
class Run:
    """The parts of one run, built from its config."""

    cfg: DictConfig
    out_dir: Path
    datamodule: TensorDataModule
    module: ImageClassifier
    trainer: pl.Trainer
    recorder: EpochRecorder
    checkpoints: list[Path]  # where a resumable checkpoint may be, in order of preference
    resume: Path | None  # the checkpoint this attempt resumes from

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's files (rank zero of a DDP run)."""
        return self.trainer.is_global_zero


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    return [instantiate(c) for c in (group or {}).values() if c is not None]


def _checkpoint_paths(callbacks: list[pl.Callback]) -> list[Path]:
    """The interrupt checkpoint, then ``last.ckpt``, of the configured checkpoint callbacks."""
    interrupted = [cb.ckpt_path for cb in callbacks if isinstance(cb, OnExceptionCheckpoint)]
    last = [
        cb.format_checkpoint_name({}, cb.CHECKPOINT_NAME_LAST)
        for cb in callbacks
        if isinstance(cb, ModelCheckpoint)
    ]
    return [Path(p) for p in (*interrupted, *last)]


def build(cfg: DictConfig, out_dir: Path) -> Run:
    """Check the run directory and any checkpoint to resume, then build the data, the module
    and the trainer of a validated config (nothing is written yet)."""
    check_writable(out_dir)
    identity = run_identity(cfg)
    recorder = EpochRecorder()
    callbacks = [recorder, *_instantiate_all(cfg.callbacks), ResumableRun(identity)]
    checkpoints = _checkpoint_paths(callbacks)
    resume = resume_from(checkpoints, identity)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg.data, cfg.seed, cfg.get("augment"))
    datamodule.prepare_data()  # find, verify and decode the data before anything else runs
    module = instantiate(cfg.module)(
        net=instantiate(cfg.model, num_classes=datamodule.num_classes),
        optimizer=optimizer_factory(cfg.optimizer),
        param_split=group_split(cfg.optimizer),
        scheduler=cfg.scheduler,
        num_classes=datamodule.num_classes,  # data.num_classes, or counted from the data
    )
    join_submitit_tasks()  # the tasks of a submitit job are the processes of a DDP run
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=_instantiate_all(cfg.logger)
    )
    check_processes(trainer)
    return Run(cfg, out_dir, datamodule, module, trainer, recorder, checkpoints, resume)


def start(run: Run) -> None:
    """From here on the run directory changes: the old metrics.json goes (a run without it has
    not finished), the provenance is written and the loggers get the config."""
    log_config(run.trainer.loggers, run.cfg)
    if run.resume:
        log.info("resuming from %s", run.resume)
    if not run.writes:
        return
    (run.out_dir / METRICS_FILE).unlink(missing_ok=True)
    source = run.datamodule.source
    record = provenance(Path(run.cfg.paths.root_dir), source.name, source.fingerprint())
    atomic_write_json(run.out_dir / RUN_INFO_FILE, record)
    # The checkpoint folders exist even when no checkpoint gets written (a run that diverges
    # in its first epoch), so pipelines that declare them as outputs find them.
    for path in run.checkpoints:
        path.parent.mkdir(parents=True, exist_ok=True)


def fit(run: Run) -> None:
    """Train (resuming where an earlier attempt stopped); SIGTERM or Ctrl-C ends it as
    :class:`RunInterrupted` after the interrupt checkpoint is saved."""
    try:
        with warnings.catch_warnings():
            # With an interrupt checkpoint configured, Lightning looks for a "last" checkpoint
            # itself when ckpt_path is None and warns; resume_from has already looked.
            warnings.filterwarnings("ignore", message=r"`\.fit\(ckpt_path=None\)`")
            warnings.filterwarnings("ignore", message=r"\.fit\(ckpt_path=\"last\"\) is set")
            run.trainer.fit(
                run.module, datamodule=run.datamodule, ckpt_path=run.resume, weights_only=True
            )
    except SIGTERMException as exc:
        raise _interrupted(run, "SIGTERM", 128 + signal.SIGTERM) from exc
    except SystemExit as exc:  # Lightning's answer to Ctrl-C, once the checkpoint is saved
        if not run.trainer.interrupted:
            raise
        raise _interrupted(run, "Ctrl-C", 128 + signal.SIGINT) from exc


def _interrupted(run: Run, what: str, exit_code: int) -> RunInterrupted:
    saved = next((p for p in run.checkpoints if p.exists()), None)
    where = f"checkpoint saved: {saved}" if saved else "no checkpoint saved"
    return RunInterrupted(f"{what} at step {run.trainer.global_step}; {where}", exit_code)


def test(run: Run) -> dict[str, float]:
    """Test the weights at the end of training on the official test split (nothing when the
    data has none, e.g. an image folder, or the run diverged)."""
    if run.module.diverged or run.datamodule.split_sizes()["test"] == 0:
        return {}
    return run.trainer.test(run.module, datamodule=run.datamodule, verbose=False)[0]


def summarize(
    run: Run, test_metrics: Mapping[str, float], choices: Mapping[str, str | None]
) -> RunMetrics:
    """The run's :class:`~optstudy.artifacts.RunMetrics`, from its epoch record and test."""
    rows = run.recorder.rows
    val_accs = [row["val_acc"] for row in rows]
    return RunMetrics(
        status=DIVERGED if run.module.diverged else COMPLETED,
        best_val_acc=max(val_accs, default=None),
        final_val_acc=val_accs[-1] if val_accs else None,
        final_val_loss=rows[-1]["val_loss"] if rows else None,
        final_train_loss=rows[-1]["train_loss"] if rows else None,
        test_acc=test_metrics.get("test_acc"),
        test_loss=test_metrics.get("test_loss"),
        epochs=len(rows),
        steps=run.trainer.global_step,
        train_time_s=round(run.recorder.elapsed(), 3),
        seed=run.cfg.seed,
        lr=run.cfg.optimizer.get("lr"),
        torch_threads=torch.get_num_threads(),
        peak_gpu_memory_mb=peak_gpu_memory_mb(run.module.device),
        choices={group: choices.get(group) for group in CHOICE_GROUPS},
        group=current_group(),
    )


def train(cfg: DictConfig, out_dir: Path, choices: Mapping[str, str | None]) -> dict[str, Any]:
    """Train and test a validated config (see :func:`optstudy.validation.validate`) into the
    run directory ``out_dir``; return the content of its ``metrics.json``."""
    run = build(cfg, Path(out_dir))
    start(run)
    fit(run)
    if run.writes:
        atomic_write_json(run.out_dir / CLASSES_FILE, run.datamodule.classes)
    metrics = summarize(run, test(run), choices).to_json()
    if run.writes:
        atomic_write_json(run.out_dir / METRICS_FILE, metrics)
    log.info(outcome(metrics))
    return metrics
