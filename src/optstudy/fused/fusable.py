"""Whether a group's jobs can train fused, decided from their configs before anything is built.

A group trains fused when its optimizer is fusable (``optimizer.fusable: true``, see
:mod:`optstudy.fused.optimizer`) and every per-member thing it needs is per member in the
fused step: one process and device (no DDP), loggers that may be open side by side (the CSV
log; W&B keeps one run per process), a schedule that changes only the lr (not ``onecycle``'s
``cycle_momentum``), and callbacks the fused trainer knows, or that every member configures
the same way (they then run once, on the group). Imports neither torch nor Lightning.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from omegaconf import DictConfig, OmegaConf

# The callbacks a fused group runs for each member itself (optstudy.fused.records), by class.
PER_MEMBER_CALLBACKS = (
    "pytorch_lightning.callbacks.ModelCheckpoint",
    "pytorch_lightning.callbacks.LearningRateMonitor",
    "pytorch_lightning.callbacks.EarlyStopping",
    "optstudy.callbacks.EpochHistory",
    "optstudy.callbacks.OptimizerDiagnostics",
    "optstudy.callbacks.InterruptCheckpoint",
)
# Loggers that may be open for every member at once.
SIDE_BY_SIDE_LOGGERS = ("optstudy.tracking.csv_logger.ResumableCSVLogger",)


def _get(cfg: DictConfig, key: str) -> object:
    return OmegaConf.select(cfg, key, default=None)


def _optimizer(configs: Sequence[DictConfig]) -> str | None:
    if _get(configs[0], "optimizer.fusable") is not True:
        return (
            f"optimizer {_get(configs[0], 'optimizer._target_')} is not fusable (its config "
            "does not say fusable: true: its update is not elementwise and linear in lr)"
        )
    return None


def _trainer(configs: Sequence[DictConfig]) -> str | None:
    strategy = _get(configs[0], "trainer.strategy")
    if strategy not in (None, "auto") or (_get(configs[0], "trainer.num_nodes") or 1) > 1:
        return "a DDP run spreads one run over processes; a fused group is one process"
    return None


def _loggers(configs: Sequence[DictConfig]) -> str | None:
    for cfg in configs:
        for name, logger in (_get(cfg, "logger") or {}).items():
            if logger is not None and logger.get("_target_") not in SIDE_BY_SIDE_LOGGERS:
                return (
                    f"logger.{name} cannot log several runs at once in one process (W&B keeps "
                    "one run open per process)"
                )
    return None


def _scheduler(configs: Sequence[DictConfig]) -> str | None:
    if any(_get(cfg, "scheduler.cycle_momentum") for cfg in configs):
        return "scheduler.cycle_momentum cycles the optimizer's momentum, which members share"
    return None


def group_callbacks(configs: Sequence[DictConfig]) -> list[str]:
    """The keys of ``callbacks`` whose callbacks the fused trainer does not run per member:
    they run once, on the group's trainer (see :func:`why_not_fused`)."""
    keys = {key for cfg in configs for key in (_get(cfg, "callbacks") or {})}
    return sorted(
        key
        for key in keys
        if any(
            _get(cfg, f"callbacks.{key}._target_") not in (None, *PER_MEMBER_CALLBACKS)
            for cfg in configs
        )
    )


def _callbacks(configs: Sequence[DictConfig]) -> str | None:
    for key in group_callbacks(configs):
        settings = {
            json.dumps(OmegaConf.to_container(cfg.callbacks[key]), sort_keys=True, default=str)
            if cfg.callbacks.get(key) is not None
            else "null"
            for cfg in configs
        }
        if len(settings) > 1:
            return (
                f"callbacks.{key} differs between members; a callback that is not per member "
                "runs once for the whole group"
            )
    return None


CHECKS: tuple[Callable[[Sequence[DictConfig]], str | None], ...] = (
    _optimizer,
    _trainer,
    _loggers,
    _scheduler,
    _callbacks,
)


def why_not_fused(configs: Sequence[DictConfig]) -> str | None:
    """Why the jobs of one group (their configs) cannot train fused, or None when they can."""
    return next((reason for check in CHECKS if (reason := check(configs))), None)
