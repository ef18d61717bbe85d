"""Synthetic run directories in the real on-disk formats (``.hydra/config.yaml`` and
``hydra.yaml``, ``metrics.json``, ``history.csv``, ``diagnostics.csv``): the report's tests
build studies from them without training."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from optstudy.artifacts import (
    CONFIG_FILE,
    DIAGNOSTICS_COLUMNS,
    DIAGNOSTICS_FILE,
    HISTORY_COLUMNS,
    HISTORY_FILE,
    HYDRA_FILE,
    METRICS_FILE,
    WHOLE_MODEL,
    RunMetrics,
    run_dir_name,
)

TARGETS = {
    "sgd": "torch.optim.SGD",
    "momentum": "torch.optim.SGD",
    "adam": "torch.optim.Adam",
    "adamw": "torch.optim.AdamW",
    "adam_l2": "torch.optim.Adam",
    "adagrad": "torch.optim.Adagrad",
    "rmsprop": "torch.optim.RMSprop",
    "adadelta": "torch.optim.Adadelta",
}
STEPS_PER_EPOCH = 10


@dataclass
class Run:
    """One synthetic run: what it trained and the numbers it recorded."""

    optimizer: str
    lr: float
    seed: int
    val_accs: Sequence[float]  # per epoch; best_val_acc and final_val_acc follow from them
    test_acc: float | None = None
    scheduler: str = "constant"
    data: str = "digits"
    model: str = "mlp"
    augment: str = "none"
    status: str = "completed"
    train_losses: Sequence[float] | None = None  # per epoch (default: 1 − val acc)
    eff_steps: Sequence[float] | None = None  # whole-model eff_step_median, every 5 steps
    optimizer_args: Mapping[str, Any] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)  # further top-level config keys
    job: int = 0


def study_block(name: str, tasks: Mapping[str, tuple[str, str]], **extra: Any) -> dict:
    """A tuned study's ``study`` block as a run's config holds it (without task and phase)."""
    return {
        "name": name,
        "tasks": {t: {"data": d, "model": m} for t, (d, m) in tasks.items()},
        "optimizers": extra.get("optimizers", ["sgd", "momentum", "adam"]),
        "schedulers": ["constant"],
        "tuning": {
            "method": extra.get("method", "grid"),
            "points_per_decade": 1,
            "trials": 3,
            "seeds": [0],
            "metric": "best_val_acc",
        },
        "final": {"seeds": [1, 2, 3]},
        "defaults": True,
    }


def _write_csv(path: Path, columns: Sequence[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def write_run(
    folder: Path, run: Run, study: Mapping[str, Any] | None = None, task: str | None = None,
    phase: str | None = None,
) -> Path:  # fmt: skip
    """Write ``run`` as a run directory under ``folder`` (a sweep's job folder name); with a
    ``study`` block, as a run of its ``task`` and ``phase``."""
    run_dir = folder / f"{run.job}-{run_dir_name(run.optimizer, run.scheduler, run.seed)}"
    (run_dir / ".hydra").mkdir(parents=True)
    epochs = len(run.val_accs)
    config: dict[str, Any] = {
        "seed": run.seed,
        "data": {"name": run.data},
        "model": {"name": run.model},
        "optimizer": {"_target_": TARGETS[run.optimizer], "lr": run.lr, **run.optimizer_args},
        "scheduler": {"name": run.scheduler},
        "trainer": {"max_epochs": epochs},
        **run.config,
    }
    if study is not None:
        config["study"] = {**study, "task": task, "phase": phase}
    OmegaConf.save(OmegaConf.create(config), run_dir / CONFIG_FILE)
    choices = {
        "data": run.data,
        "model": run.model,
        "optimizer": run.optimizer,
        "scheduler": run.scheduler,
        "augment": run.augment,
    }
    hydra = {"hydra": {"job": {"num": run.job}, "runtime": {"choices": choices}}}
    OmegaConf.save(OmegaConf.create(hydra), run_dir / HYDRA_FILE)
    losses = list(run.train_losses or [1.0 - v for v in run.val_accs])
    history = [
        {
            "epoch": e,
            "lr": run.lr,
            "train_loss": losses[e],
            "train_acc": run.val_accs[e],
            "val_loss": 1.0 - run.val_accs[e],
            "val_acc": run.val_accs[e],
            "elapsed_s": 2.0 * (e + 1),
        }
        for e in range(epochs)
    ]
    _write_csv(run_dir / HISTORY_FILE, HISTORY_COLUMNS, history)
    if run.eff_steps is not None:
        rows = [
            {c: 1.0 for c in DIAGNOSTICS_COLUMNS}
            | {
                "step": 5 * i,
                "epoch": 5 * i // STEPS_PER_EPOCH,
                "layer": WHOLE_MODEL,
                "eff_step_median": s,
                "eff_step_p10": s / 2,
                "eff_step_p90": 2 * s,
            }
            for i, s in enumerate(run.eff_steps)
        ]
        _write_csv(run_dir / DIAGNOSTICS_FILE, DIAGNOSTICS_COLUMNS, rows)
    if run.status == "incomplete":  # a run that never finished has no metrics.json
        return run_dir
    completed = run.status == "completed"
    metrics = RunMetrics(
        status=run.status,
        best_val_acc=max(run.val_accs) if completed else None,
        final_val_acc=run.val_accs[-1] if completed else None,
        final_val_loss=1.0 - run.val_accs[-1] if completed else None,
        final_train_loss=losses[-1],
        test_acc=run.test_acc if completed else None,
        test_loss=None,
        epochs=epochs,
        steps=epochs * STEPS_PER_EPOCH,
        train_time_s=2.0 * epochs,
        seed=run.seed,
        lr=run.lr,
        torch_threads=1,
        peak_gpu_memory_mb=None,
        choices=choices,
    )
    (run_dir / METRICS_FILE).write_text(json.dumps(metrics.to_json()))
    return run_dir
