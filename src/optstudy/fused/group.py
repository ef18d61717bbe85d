"""Train a fused group: its members' run configs in, each member's run directory out.

build (data, every member's network and state, the fused module, one trainer) → start (each
member's run directory) → fit → test → each member's metrics.json. The group's own
checkpoints (``last.ckpt`` after each epoch, ``interrupted.ckpt`` on SIGTERM) are in its
folder under :data:`~optstudy.artifacts.FUSED_GROUPS_DIR`; the same members resume from them.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import logging
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from optstudy.artifacts import (
    CLASSES_FILE,
    COMPLETED,
    FUSED_CHECKPOINT_KEY,
    FUSED_GROUPS_DIR,
    HISTORY_COLUMNS,
    METRICS_FILE,
)
from optstudy.atomic import atomic_write_json
from optstudy.callbacks import InterruptCheckpoint, ResumableRun, resume_from
from optstudy.checkpoint_io import AtomicCheckpointIO
from optstudy.data import build_datamodule
from optstudy.errors import ConfigError
from optstudy.fused.batches import FusedDataModule
from optstudy.fused.member import Member, MemberRun
from optstudy.fused.module import FusedClassifier
from optstudy.fused.noise import MemberRng, masked_dropout_sites, random_modules
from optstudy.fused.records import PER_MEMBER, MemberOutputs, MemberRecords
from optstudy.grouping import GroupInfo, in_group
from optstudy.optim import group_split, optimizer_factory
from optstudy.run import (
    checkpoint_paths,
    claim,
    fit,
    instantiate_all,
    prepare_run_dir,
    run_identity,
    run_metrics,
)
from optstudy.rundir import check_writable
from optstudy.tracking.run_config import log_config

log = logging.getLogger(__name__)

MODE = "vmap"  # how a fused group trains, as metrics.json's group record says


@dataclass
class FusedRun:
    """The parts of a fused group, built from its members' configs."""

    runs: list[MemberRun]
    out_dir: Path  # the group's folder (its checkpoints)
    members: list[Member]
    outputs: list[MemberOutputs]
    datamodule: FusedDataModule
    module: FusedClassifier
    records: MemberRecords
    trainer: pl.Trainer
    resume: Path | None

    @property
    def checkpoints(self) -> list[Path]:
        """The group's checkpoints an interrupted fit leaves (the same command resumes)."""
        return [self.out_dir / "interrupted.ckpt", self.out_dir / "last.ckpt"]


def group_folder(base: Path, runs: Sequence[MemberRun]) -> Path:
    """The folder of the group of ``runs`` under ``base`` (a sweep's folder): one per set of
    member run directories, so the same command finds it again."""
    key = "\n".join(str(run.out_dir.resolve()) for run in runs)
    return Path(base) / FUSED_GROUPS_DIR / f"group-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def group_identity(runs: Sequence[MemberRun]) -> dict[str, Any]:
    """What a group checkpoint may be resumed by: the same members, in the same run
    directories, with the same configs (:func:`optstudy.run.run_identity`)."""
    return {"members": [[str(r.out_dir.resolve()), run_identity(r.cfg)] for r in runs]}


def own_checkpoint(run: MemberRun) -> Path | None:
    """A checkpoint in the member's run directory that a run trained on its own wrote
    (``interrupted.ckpt``, or a ``last.ckpt`` without :data:`FUSED_CHECKPOINT_KEY`): that run
    resumes from it on its own, not in a fused group. None when there is none."""
    for path in checkpoint_paths(instantiate_all(run.cfg.callbacks)):
        if not path.is_file():
            continue
        try:
            saved = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except Exception:  # not ours: the run on its own says what is wrong with it
            return path
        if FUSED_CHECKPOINT_KEY not in saved:
            return path
    return None


def _member(
    index: int, run: MemberRun, num_classes: int
) -> tuple[torch.nn.Module, Member, MemberOutputs]:
    """Member ``index``'s network (``num_classes`` outputs), with the initial weights its
    standalone run draws (seeded as it seeds), its state and its outputs."""
    cfg = run.cfg
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    net = instantiate(cfg.model, num_classes=num_classes)
    rng = MemberRng.current(cfg.seed)
    callbacks = [c for c in instantiate_all(cfg.callbacks) if isinstance(c, PER_MEMBER)]
    outputs = MemberOutputs.from_callbacks(callbacks, instantiate_all(cfg.logger))
    early = outputs.early_stopping
    metrics = HISTORY_COLUMNS[2:-1]  # a member's epoch metrics
    if early is not None and early.monitor not in metrics:
        raise ConfigError(
            f"callbacks.early_stopping.monitor={early.monitor} is not one of the metrics a "
            f"fused member has: {', '.join(metrics)}"
        )
    member = Member(index, run, rng, early, cfg.module.divergence_factor)
    return net, member, outputs


def build(runs: Sequence[MemberRun], folder: Path) -> FusedRun:
    """Check the group folder and any group checkpoint to resume, then build the data,
    every member, the fused module and the group's trainer (nothing is written yet)."""
    check_writable(folder)  # the members' directories: claimed (and checked) by train_group
    identity = group_identity(runs)
    interrupt = InterruptCheckpoint(dirpath=folder, filename="interrupted")
    last = folder / "last.ckpt"
    first = runs[0].cfg
    resume = resume_from([Path(interrupt.ckpt_path), last], identity, first.trainer.max_epochs)
    data = build_datamodule(first.data, first.seed, first.get("augment"))
    data.prepare_data()
    classes = data.num_classes  # data.num_classes, or counted from the data
    built = (_member(i, run, classes) for i, run in enumerate(runs))
    nets, members, outputs = zip(*built, strict=True)
    template = instantiate(first.module)(
        net=copy.deepcopy(nets[0]),
        optimizer=optimizer_factory(first.optimizer),
        param_split=group_split(first.optimizer),
        scheduler=first.scheduler,
        num_classes=classes,
    )
    if randomness := random_modules(template.net):
        raise ConfigError(
            f"model={first.model._target_} draws random numbers inside the network "
            f"({', '.join(randomness)}), which a fused group cannot draw per member; train "
            "it with launcher.mode=sequential"
        )
    sites = masked_dropout_sites(template.net, data.shape)
    module = FusedClassifier(template, nets, list(members), sites, data.augment)
    records = MemberRecords(members, outputs, last)
    # Callbacks that are not per member run once, on the group (every member has the same).
    shared = [c for c in instantiate_all(first.callbacks) if not isinstance(c, PER_MEMBER)]
    trainer = instantiate(
        first.trainer,
        callbacks=[records, *shared, interrupt, ResumableRun(identity)],
        logger=False,
        default_root_dir=str(folder),
        plugins=[AtomicCheckpointIO()],
    )
    datamodule = FusedDataModule(data, [run.cfg.seed for run in runs])
    return FusedRun(
        list(runs),
        folder,
        list(members),
        list(outputs),
        datamodule,
        module,
        records,
        trainer,
        resume,
    )


def start(group: FusedRun) -> None:
    """From here on the run directories change: each loses its metrics.json, gets its
    provenance and checkpoint folders, and its loggers get its config."""
    if group.resume:
        log.info("resuming the fused group from %s", group.resume)
    source = group.datamodule.data.source
    for run, outputs in zip(group.runs, group.outputs, strict=True):
        folders = [Path(c.dirpath) / "last.ckpt" for c in outputs.checkpoints]
        prepare_run_dir(run.cfg, run.out_dir, source, folders)
        log_config(outputs.loggers, run.cfg)


def test(group: FusedRun) -> list[dict[str, float]]:
    """Each member's test metrics on its weights at the end of training (none for a member
    that diverged, or when the data has no test split)."""
    tested = [m.final_status == COMPLETED for m in group.members]
    if not any(tested) or group.datamodule.data.split_sizes()["test"] == 0:
        return [{} for _ in group.members]
    group.trainer.test(group.module, datamodule=group.datamodule, verbose=False)
    results = group.module.results["test"]
    return [r if t else {} for t, r in zip(tested, results, strict=True)]


def finish(group: FusedRun, tests: list[dict[str, float]], group_id: int) -> list[dict]:
    """Write each member's classes.json and metrics.json (in ``group_id``); return the
    metrics."""
    elapsed = group.module.clock.elapsed()
    results = []
    for member, outputs, test_metrics in zip(group.members, group.outputs, tests, strict=True):
        run = member.run
        atomic_write_json(run.out_dir / CLASSES_FILE, group.datamodule.data.classes)
        info = GroupInfo(group_id, len(group.members), MODE, member.index)
        with in_group(info):
            metrics = run_metrics(
                run.cfg,
                group.records.rows[member.index],
                member.final_status,
                member.steps,
                member.stopped_at if member.stopped_at is not None else elapsed,
                test_metrics,
                run.choices,
                group.module.device,
            ).to_json()
        for logger in outputs.loggers:
            if test_metrics:
                logger.log_metrics(dict(test_metrics), step=member.steps)
            logger.finalize("success")
        atomic_write_json(run.out_dir / METRICS_FILE, metrics)
        log.info("member %d finished: %s", member.index, metrics)
        results.append(metrics)
    return results


def train_group(runs: Sequence[MemberRun], base: Path, group_id: int) -> list[dict[str, Any]]:
    """Train validated member configs as one fused group (its folder under ``base``); return
    each member's metrics.json content. The group owns its members' run directories meanwhile
    (:func:`optstudy.run.claim`)."""
    with ExitStack() as owned:
        for run in runs:
            owned.enter_context(claim(run.out_dir))
        group = build(runs, group_folder(base, runs))
        start(group)
        fit(group)
        return finish(group, test(group), group_id)


def train_splitting(runs: Sequence[MemberRun], base: Path, group_id: int) -> list[dict[str, Any]]:
    """:func:`train_group`; a group that runs out of GPU memory is split in halves, each
    trained (and split again if need be) on its own."""
    try:
        return train_group(runs, base, group_id)
    except torch.OutOfMemoryError:
        if len(runs) == 1:
            raise
        half = (len(runs) + 1) // 2
        log.warning(
            "group %d: out of GPU memory with %d members; splitting it into %d + %d members "
            "and training those",
            group_id,
            len(runs),
            half,
            len(runs) - half,
        )
        gc.collect()
        torch.cuda.empty_cache()
        first = train_splitting(runs[:half], base, group_id)
        return first + train_splitting(runs[half:], base, group_id)
