"""The run-directory contract: what a run writes and a study reads, defined once.

Writers (``run``, the callbacks) and readers (``study.collect``, the W&B job end, DVC's
``dvc.yaml``) import these names instead of typing them again. Imports neither torch nor
Lightning, so the report and the entry points stay light.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Files and folders of a run directory (paths relative to it).
CONFIG_FILE = ".hydra/config.yaml"  # the composed config (interpolations kept)
HYDRA_FILE = ".hydra/hydra.yaml"  # Hydra's own config of the job: the group choices
METRICS_FILE = "metrics.json"  # written last, atomically: a run without it did not finish
HISTORY_FILE = "history.csv"
DIAGNOSTICS_FILE = "diagnostics.csv"
CLASSES_FILE = "classes.json"
RUN_INFO_FILE = "run_info.json"
CHECKPOINT_DIR = "checkpoints"
STEP_LOG_FILE = "csv/metrics.csv"  # Lightning's CSV logger: step-level values

# history.csv: one row per finished training epoch.
HISTORY_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "elapsed_s")
# diagnostics.csv: one row per measured optimizer step and layer (README: Optimizer diagnostics).
DIAGNOSTICS_COLUMNS = (
    "step",  # optimizer steps before this one (0: the first step)
    "epoch",
    "layer",
    "grad_norm",  # ‖g‖: the gradient the step used (after clipping, if any)
    "param_norm",  # ‖θ‖ before the step
    "update_norm",  # ‖Δθ‖ of the step
    "update_ratio",  # ‖Δθ‖ / ‖θ‖
    "distance_from_init",  # ‖θ − θ₀‖ before the step
    "eff_step_p10",  # 10th percentile of the effective step size over the layer's elements
    "eff_step_median",
    "eff_step_p90",
)
WHOLE_MODEL = "all"  # the layer of diagnostics.csv's whole-model rows

# Run statuses: metrics.json says completed or diverged; a run without it is incomplete.
COMPLETED, DIVERGED, INCOMPLETE = "completed", "diverged", "incomplete"

# Config groups whose chosen option names every run records (metrics.json, report columns).
CHOICE_GROUPS = ("data", "model", "optimizer", "scheduler", "augment")
# The config groups that make a task: the report compares configurations within a task.
TASK_GROUPS = ("data", "model")

# Config keys that say where things are, how progress is shown or what is measured on the
# side, not what a run computes. A run may resume under other values of these, and the
# report does not tell runs apart by them. Keys are dotted prefixes.
NOT_EXPERIMENT = (
    "paths",
    "logger",
    "launcher",
    "study",  # the study a run belongs to, its task and phase: labels, not settings
    "optimizer.search_space",  # the tuned study's search space, not an optimizer argument
    "optimizer.fusable",  # whether the optimizer can train in a fused group
    "callbacks.progress_bar",
    "callbacks.lr_monitor",
    "callbacks.history",
    "callbacks.diagnostics",
    "callbacks.checkpoint",
    "callbacks.interrupt_checkpoint",
    "trainer.default_root_dir",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "data.root",
    "data.cache_dir",
    "data.eval_batch_size",
    "data.source.root",
    "data.source.search_dirs",
    "data.source.download_dir",
    "data.source.download",
)
# Keys a run may be continued under with another value: a finished or interrupted run resumed
# with a larger trainer.max_epochs trains on to it. The report still tells them apart.
EXTENDABLE = ("trainer.max_epochs",)


def is_experiment_key(key: str, ignored: Iterable[str] = NOT_EXPERIMENT) -> bool:
    """Whether the dotted config ``key`` is part of what a run computes (not under any of the
    ``ignored`` prefixes)."""
    return not any(key == k or key.startswith(k + ".") for k in ignored)


def run_dir_name(optimizer: object, scheduler: object, seed: object) -> str:
    """The folder name of a run in a study: ``<optimizer>-<scheduler>-s<seed>`` (a sweep puts
    its job number in front)."""
    return f"{optimizer}-{scheduler}-s{seed}"


def task_label(data: object, model: object) -> str:
    """The name of a task in reports: ``<data>/<model>``."""
    return f"{data}/{model}"


@dataclass(frozen=True)
class RunMetrics:
    """What ``metrics.json`` holds: how the run ended, its numbers and what it trained."""

    status: str  # COMPLETED or DIVERGED
    best_val_acc: float | None
    final_val_acc: float | None
    final_val_loss: float | None
    final_train_loss: float | None
    test_acc: float | None  # the official test split, on the weights at the end of training
    test_loss: float | None
    epochs: int  # training epochs finished
    steps: int  # optimizer steps taken
    train_time_s: float  # seconds of training and validation, across resumes
    seed: int
    lr: float | None  # optimizer.lr
    torch_threads: int
    peak_gpu_memory_mb: float | None  # None on the CPU
    choices: Mapping[str, str | None] = field(default_factory=dict)  # CHOICE_GROUPS → option
    # The group the run trained in (launcher=grouped): id, size, mode, member; None alone.
    group: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The record as metrics.json stores it: the choices as keys of their own."""
        record = asdict(self)
        choices = record.pop("choices")
        return {**record, **{group: choices.get(group) for group in CHOICE_GROUPS}}


# The numeric fields of metrics.json that the report collects for every run.
METRIC_FIELDS = (
    "best_val_acc",
    "final_val_acc",
    "test_acc",
    "final_val_loss",
    "final_train_loss",
    "test_loss",
    "epochs",
    "steps",
    "train_time_s",
)


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    """The parsed ``metrics.json`` of ``run_dir``, or None when the run has not finished."""
    path = Path(run_dir) / METRICS_FILE
    return json.loads(path.read_text()) if path.is_file() else None
