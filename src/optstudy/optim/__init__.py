"""Optimizers and lr schedules built from Hydra configs behind one fixed interface."""

from optstudy.optim.build import (
    RESERVED_KEYS,
    build_optimizer,
    build_scheduler,
    group_split,
    optimizer_factory,
    optimizer_from_config,
    param_groups,
)

__all__ = [
    "RESERVED_KEYS",
    "build_optimizer",
    "build_scheduler",
    "group_split",
    "optimizer_factory",
    "optimizer_from_config",
    "param_groups",
]
