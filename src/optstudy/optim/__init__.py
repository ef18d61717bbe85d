"""Optimizers and lr schedules built from Hydra configs behind one fixed interface."""

from optstudy.optim.build import build_optimizer, build_scheduler, optimizer_factory, param_groups

__all__ = ["build_optimizer", "build_scheduler", "optimizer_factory", "param_groups"]
