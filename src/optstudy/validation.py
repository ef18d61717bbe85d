"""Check a composed run config before anything is decoded or trained."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from optstudy.errors import ConfigError
from optstudy.optim.build import LIGHTNING_KEY, build_scheduler, scheduler_factory

Rule = tuple[Callable[[Any], bool], str]

# Ranges of optimizer hyper-parameters, by argument name, whichever optimizer uses them.
OPTIMIZER_RULES: dict[str, Rule] = {
    "lr": (lambda v: v > 0, "> 0"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "betas": (lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two values in [0, 1)"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "eps": (lambda v: v >= 0, ">= 0"),
    "alpha": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "rho": (lambda v: 0 <= v <= 1, "in [0, 1]"),
}

# Ranges of other run settings, by their full config key.
RUN_RULES: dict[str, Rule] = {
    "seed": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "an integer >= 0",
    ),
    "data.batch_size": (lambda v: v >= 1, ">= 1"),
    "data.eval_batch_size": (lambda v: v >= 1, ">= 1"),
    "data.val_fraction": (lambda v: 0 < v < 1, "in (0, 1)"),
    "data.num_classes": (
        lambda v: isinstance(v, int) and v >= 2,
        "an integer >= 2 (for an image folder: its number of class sub-folders)",
    ),
    "trainer.max_epochs": (lambda v: v >= 1, ">= 1"),
    "scheduler.lightning.interval": (lambda v: v in ("epoch", "step"), "epoch or step"),
    "module.decay_norm_and_bias": (lambda v: isinstance(v, bool), "true or false"),
    "module.divergence_factor": (lambda v: v is None or v > 1, "> 1 or null"),
    "module.channels_last": (lambda v: v is None or isinstance(v, bool), "true, false or null"),
    "module.compile": (lambda v: isinstance(v, bool), "true or false"),
}
# Keys whose rule accepts null (the others must be set).
NULLABLE = ("module.divergence_factor", "module.channels_last")
# trainer.accelerator values that train on a CUDA GPU only (auto falls back to the CPU).
GPU_ONLY = ("gpu", "cuda")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check(key: str, value: Any, rule: Rule, nullable: bool = False) -> None:
    ok, allowed = rule
    try:
        valid = (value is not None or nullable) and ok(value)
    except TypeError:
        valid = False
    if valid:
        return
    if isinstance(value, str) and _is_number(value):  # quoted on the command line: '"0.01"'
        raise ConfigError(
            f'{key}="{value}" is invalid: a string, must be a number {allowed} '
            f"(write {key}={value}, without quotes)"
        )
    raise ConfigError(f"{key}={value} is invalid: must be {allowed}")


def _check_trainer(trainer: DictConfig) -> None:
    """The trainer's arguments must be arguments of its class, and a GPU must exist when the
    trainer asks for one."""
    target = get_class(trainer._target_)
    params = inspect.signature(target).parameters
    for key in trainer:
        if str(key).startswith("_") or key in params:
            continue
        close = difflib.get_close_matches(str(key), list(params), n=1)
        hint = f"did you mean trainer.{close[0]}?" if close else "see its documentation"
        raise ConfigError(f"trainer.{key} is not an argument of {target.__name__}: {hint}")
    if trainer.get("accelerator") in GPU_ONLY and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={trainer.accelerator} needs a CUDA GPU, and torch sees none: "
            "use trainer=cpu, or trainer=auto (the GPU when there is one)"
        )


def _check_numbers(section: str, cfg: Any, factory: Any) -> None:
    """Values whose library default is a number must be numbers too."""
    params = inspect.signature(factory.func).parameters
    for key, value in cfg.items():
        default = params[key].default if key in params else None
        numeric = isinstance(default, int | float) and not isinstance(default, bool)
        if numeric and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ConfigError(f"{section}.{key}={value} is invalid: must be a number")


def _first_line(exc: Exception) -> str:
    cause = exc.__cause__ or exc
    return str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__


def _check_rules(cfg: DictConfig, prefix: str = "") -> None:
    for key, rule in RUN_RULES.items():
        if key.startswith(prefix):
            _check(key, OmegaConf.select(cfg, key), rule, nullable=key in NULLABLE)


def validate_data(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming the first invalid ``data.*`` value of a config."""
    _check_rules(cfg, "data.")


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming the first invalid value of a run config."""
    _check_rules(cfg)
    _check_trainer(cfg.trainer)
    for name, rule in OPTIMIZER_RULES.items():
        if name in cfg.optimizer:
            _check(f"optimizer.{name}", cfg.optimizer[name], rule)
    # Dry-build and step the optimizer and scheduler on a dummy parameter: catches unknown
    # arguments, wrong types and the libraries' own checks before any data is touched.
    try:
        factory = instantiate(cfg.optimizer)
        _check_numbers("optimizer", cfg.optimizer, factory)
        optimizer = factory([torch.zeros(1, requires_grad=True)])
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"optimizer: {_first_line(exc)}") from exc
    try:
        arguments = {k: v for k, v in cfg.scheduler.items() if k != LIGHTNING_KEY}
        _check_numbers("scheduler", arguments, scheduler_factory(cfg.scheduler))
        scheduler = build_scheduler(
            cfg.scheduler, optimizer, {"step": 100, "epoch": cfg.trainer.max_epochs}
        )
        optimizer.step()
        scheduler["scheduler"].step(*([1.0] if "monitor" in scheduler else []))
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"scheduler: {_first_line(exc)}") from exc
