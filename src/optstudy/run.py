"""One training run: config in, run directory out (see :mod:`optstudy.artifacts`).

own the run directory → build (data, module, trainer) → start → fit → test → write metrics.json
"""

from __future__ import annotations

import copy
import logging
import signal
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

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
    CONFIG_FILE,
    DIVERGED,
    EXTENDABLE,
    METRICS_FILE,
    NOT_EXPERIMENT,
    RUN_INFO_FILE,
    STEP_LOG_FILE,
    RunMetrics,
)
from optstudy.atomic import atomic_write_json, leftover_temp_files
from optstudy.callbacks import EpochRecorder, ResumableRun, resume_from
from optstudy.checkpoint_io import AtomicCheckpointIO
from optstudy.console import outcome
from optstudy.data import TensorDataModule, build_datamodule
from optstudy.distributed.processes import (
    check_processes,
    join_submitit_tasks,
    launched_as_rank_zero,
)
from optstudy.errors import RunInterrupted
from optstudy.grouping import current_group
from optstudy.module import ImageClassifier
from optstudy.optim import group_split, optimizer_factory
from optstudy.provenance import provenance
from optstudy.rundir import check_writable, owned, write_job_record
from optstudy.tracking.run_config import log_config, plain_config

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
    job: DictConfig | None  # Hydra's config of the job ({"hydra": ...}), None outside Hydra

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's files (rank zero of a DDP run)."""
        return self.trainer.is_global_zero


class Fittable(Protocol):
    """What :func:`fit` trains: a run, or a fused group (``optstudy.fused``)."""

    out_dir: Path
    module: pl.LightningModule
    datamodule: pl.LightningDataModule
    trainer: pl.Trainer
    resume: Path | None
    checkpoints: list[Path]  # where an interrupted fit leaves its checkpoint, in that order


def instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a config group of objects (callbacks, loggers), skipping
    the ones set to null."""
    return [instantiate(c) for c in (group or {}).values() if c is not None]


def checkpoint_paths(callbacks: list[pl.Callback]) -> list[Path]:
    """The interrupt checkpoint, then ``last.ckpt``, of the configured checkpoint callbacks."""
    interrupted = [cb.ckpt_path for cb in callbacks if isinstance(cb, OnExceptionCheckpoint)]
    last = [
        cb.format_checkpoint_name({}, cb.CHECKPOINT_NAME_LAST)
        for cb in callbacks
        if isinstance(cb, ModelCheckpoint)
    ]
    return [Path(p) for p in (*interrupted, *last)]


@contextmanager
def claim(out_dir: Path) -> Iterator[None]:
    """Check that the run directory can be written and own it for the ``with`` block (the
    first process of a run of several owns it for all of them), see
    :func:`optstudy.rundir.owned`."""
    check_writable(out_dir)
    join_submitit_tasks()  # the tasks of a submitit job are the processes of a DDP run
    if not launched_as_rank_zero():
        yield
        return
    with owned(out_dir):
        yield


def build(cfg: DictConfig, out_dir: Path, job: DictConfig | None = None) -> Run:
    """Check any checkpoint to resume, then build the data, the module and the trainer of a
    validated config (nothing is written into the run directory yet)."""
    identity = run_identity(cfg)
    recorder = EpochRecorder()
    callbacks = [recorder, *instantiate_all(cfg.callbacks), ResumableRun(identity)]
    checkpoints = checkpoint_paths(callbacks)
    resume = resume_from(checkpoints, identity, cfg.trainer.max_epochs)
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
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=instantiate_all(cfg.logger),
        plugins=[AtomicCheckpointIO()],
    )
    check_processes(trainer)
    return Run(cfg, out_dir, datamodule, module, trainer, recorder, checkpoints, resume, job)


def _folders(run: Run) -> set[Path]:
    """The folders the run writes files into."""
    files = [run.out_dir / name for name in (CONFIG_FILE, STEP_LOG_FILE)]
    return {run.out_dir, *(path.parent for path in (*files, *run.checkpoints))}


def _leftovers(run: Run) -> list[Path]:
    """Files of earlier attempts that this one must not build on: what killed writes left
    and, when it starts afresh, the checkpoints of an attempt that ended in its first epoch
    (else the new run's best checkpoint would get another name)."""
    found = [path for folder in _folders(run) for path in leftover_temp_files(folder)]
    if run.resume is None:
        callbacks = [cb for cb in run.trainer.callbacks if isinstance(cb, ModelCheckpoint)]
        named = [Path(cb.format_checkpoint_name({})) for cb in callbacks]
        found += [path for path in named if path.is_file()]
    return found


def start(run: Run) -> None:
    """From here on the run directory changes: the job record (``.hydra/``) becomes this run's,
    leftovers of earlier attempts go, so does the old metrics.json (a run without it has not
    finished), the provenance is written and the loggers get the config."""
    log.info("run directory: %s", run.out_dir)  # only now: a refused run's log stays as it was
    if run.writes:
        if run.job is not None:
            write_job_record(run.out_dir, run.cfg, run.job)
        for path in _leftovers(run):
            path.unlink()
    log_config(run.trainer.loggers, run.cfg)
    if run.resume:
        log.info("resuming from %s", run.resume)
    if run.writes:
        prepare_run_dir(run.cfg, run.out_dir, run.datamodule.source, run.checkpoints)


def prepare_run_dir(cfg: DictConfig, out_dir: Path, source: Any, checkpoints: list[Path]) -> None:
    """Remove the run directory's metrics.json, write its provenance (``source``: the data
    source) and create its checkpoint folders."""
    (out_dir / METRICS_FILE).unlink(missing_ok=True)
    record = provenance(Path(cfg.paths.root_dir), source.name, source.fingerprint())
    atomic_write_json(out_dir / RUN_INFO_FILE, record)
    # The checkpoint folders exist even when no checkpoint gets written (a run that diverges
    # in its first epoch), so pipelines that declare them as outputs find them.
    for path in checkpoints:
        path.parent.mkdir(parents=True, exist_ok=True)


def fit(run: Fittable) -> None:
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


def _interrupted(run: Fittable, what: str, exit_code: int) -> RunInterrupted:
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
    return run_metrics(
        run.cfg,
        run.recorder.rows,
        DIVERGED if run.module.diverged else COMPLETED,
        run.trainer.global_step,
        run.recorder.elapsed(),
        test_metrics,
        choices,
        run.module.device,
    )


def run_metrics(
    cfg: DictConfig,
    rows: list[dict[str, float]],
    status: str,
    steps: int,
    elapsed: float,
    test_metrics: Mapping[str, float],
    choices: Mapping[str, str | None],
    device: torch.device,
) -> RunMetrics:
    """A run's :class:`~optstudy.artifacts.RunMetrics` from its history ``rows``, how it ended,
    its optimizer steps, training seconds and test metrics (in the group it trained in)."""
    val_accs = [row["val_acc"] for row in rows]
    return RunMetrics(
        status=status,
        best_val_acc=max(val_accs, default=None),
        final_val_acc=val_accs[-1] if val_accs else None,
        final_val_loss=rows[-1]["val_loss"] if rows else None,
        final_train_loss=rows[-1]["train_loss"] if rows else None,
        test_acc=test_metrics.get("test_acc"),
        test_loss=test_metrics.get("test_loss"),
        epochs=len(rows),
        steps=steps,
        train_time_s=round(elapsed, 3),
        seed=cfg.seed,
        lr=cfg.optimizer.get("lr"),
        torch_threads=torch.get_num_threads(),
        peak_gpu_memory_mb=peak_gpu_memory_mb(device),
        choices={group: choices.get(group) for group in CHOICE_GROUPS},
        group=current_group(),
    )


def train(
    cfg: DictConfig,
    out_dir: Path,
    choices: Mapping[str, str | None],
    job: DictConfig | None = None,
) -> dict[str, Any]:
    """Train and test a validated config (see :func:`optstudy.validation.validate`) into the
    run directory ``out_dir``, which it owns meanwhile; return the content of its
    ``metrics.json``. ``job``: Hydra's config of the job, for the job record."""
    with claim(Path(out_dir)):
        run = build(cfg, Path(out_dir), job)
        start(run)
        fit(run)
        if run.writes:
            atomic_write_json(run.out_dir / CLASSES_FILE, run.datamodule.classes)
        metrics = summarize(run, test(run), choices).to_json()
        if run.writes:
            atomic_write_json(run.out_dir / METRICS_FILE, metrics)
    log.info(outcome(metrics))
    return metrics
