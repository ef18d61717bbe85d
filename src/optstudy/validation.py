"""Check a composed run config before anything is decoded or trained."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from torch import nn

from optstudy.errors import ConfigError
from optstudy.optim import schedule_free
from optstudy.optim.build import (
    LIGHTNING_KEY,
    SELECTORS,
    build_scheduler,
    optimizer_arguments,
    optimizer_class,
    optimizer_from_config,
    scheduler_factory,
)

Rule = tuple[Callable[[Any], bool], str]

# What the optimizer is dry-built on: a hidden and an output layer (Muon splits them).
DUMMY_MODEL = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))

# Ranges of optimizer hyper-parameters, by argument name, whichever optimizer uses them.
OPTIMIZER_RULES: dict[str, Rule] = {
    "lr": (lambda v: v > 0, "> 0"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "betas": (lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two values in [0, 1)"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "eps": (
        lambda v: all(e is None or e >= 0 for e in (v if isinstance(v, list) else [v])),
        ">= 0 (Adafactor: a pair, each null or >= 0)",
    ),
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
        lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 2),
        "an integer >= 2, or null to count the classes in the data",
    ),
    "trainer.max_epochs": (lambda v: v >= 1, ">= 1"),
    "scheduler.lightning.interval": (lambda v: v in ("epoch", "step"), "epoch or step"),
    "module.decay_norm_and_bias": (lambda v: isinstance(v, bool), "true or false"),
    "module.divergence_factor": (lambda v: v is None or v > 1, "> 1 or null"),
    "module.channels_last": (lambda v: v is None or isinstance(v, bool), "true, false or null"),
    "module.compile": (lambda v: isinstance(v, bool), "true or false"),
}
# trainer.accelerator values that train on a CUDA GPU only (auto falls back to the CPU).
GPU_ONLY = ("gpu", "cuda")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check(key: str, value: Any, rule: Rule) -> None:
    ok, allowed = rule
    try:
        valid = ok(value)  # a rule without a None case fails on None (False or TypeError)
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


def _check_missing(cfg: DictConfig, first: str | None = None) -> None:
    """Values the config leaves to the command line (``???``, e.g. ``optimizer=custom``'s
    ``_target_`` and ``lr``): ``first`` alone if given, else all."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    for key in [first] if first else missing:
        if key in missing:
            example = "my_pkg.MyOptimizer" if key == "optimizer._target_" else "…"
            raise ConfigError(f"{key} is missing: set it, e.g. {key}={example}")


def _check_search_space(space: Any, parameters: Mapping[str, Any], arguments: dict) -> None:
    """``search_space``: optimizer argument → ``{low, high, log}``, low < high, low > 0 on a
    log scale."""
    if not isinstance(space, Mapping):
        raise ConfigError("optimizer.search_space is invalid: must map arguments to ranges")
    for name, spec in space.items():
        key = f"optimizer.search_space.{name}"
        if name not in parameters and name not in arguments:
            raise ConfigError(f"{key}: the optimizer has no argument {name}")
        ok = isinstance(spec, Mapping) and set(spec) == {"low", "high", "log"}
        low, high, log = (spec.get(k) for k in ("low", "high", "log")) if ok else (0, 0, 0)
        ok = ok and all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high))
        if not (ok and isinstance(log, bool) and low < high and (low > 0 or not log)):
            raise ConfigError(
                f"{key}={spec} is invalid: must be {{low, high, log}} with numbers low < high "
                "(low > 0 when log is true)"
            )


def _check_reserved(cfg: DictConfig, cls: type) -> None:
    """The shapes of the optimizer config's project keys: fusable, search_space, param_groups."""
    optimizer = OmegaConf.to_container(cfg.optimizer, resolve=True)
    fusable = optimizer.get("fusable", False)
    if not isinstance(fusable, bool):
        raise ConfigError(f"optimizer.fusable={fusable} is invalid: must be true or false")
    parameters = inspect.signature(cls).parameters
    _check_search_space(optimizer.get("search_space", {}), parameters, optimizer_arguments(cfg))
    split = optimizer.get("param_groups") or {}
    if not isinstance(split, Mapping) or not all(
        name in SELECTORS and isinstance(options, Mapping) for name, options in split.items()
    ):
        raise ConfigError(
            f"optimizer.param_groups={split} is invalid: must map selectors "
            f"({', '.join(SELECTORS)}) to group options"
        )


@contextmanager
def _reported_as(part: str) -> Iterator[None]:
    """A library's exception inside the block as a :class:`ConfigError` naming ``part``."""
    try:
        yield
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{part}: {_first_line(exc)}") from exc


def _check_step(optimizer: Any, cls: type) -> None:
    """One step with a closure: Lightning computes the loss in the closure it passes to
    ``step``, so a step must call it (as every torch.optim optimizer does)."""
    called = []
    with _reported_as("optimizer"):
        optimizer.step(lambda: called.append(True))
    if not called:
        raise ConfigError(
            f"optimizer: {cls.__name__}.step(closure) never calls its closure; call it first, "
            "as torch.optim optimizers do: loss = closure() (under torch.enable_grad())"
        )


def _first_line(exc: Exception) -> str:
    cause = exc.__cause__ or exc
    return str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__


def _check_rules(cfg: DictConfig, prefix: str = "") -> None:
    for key, rule in RUN_RULES.items():
        if key.startswith(prefix):
            _check(key, OmegaConf.select(cfg, key), rule)


def validate_data(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming the first invalid ``data.*`` value of a config."""
    _check_rules(cfg, "data.")


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming the first invalid value of a run config."""
    _check_rules(cfg)
    _check_missing(cfg, "optimizer._target_")
    cls = optimizer_class(cfg.optimizer)
    _check_missing(cfg)
    _check_reserved(cfg, cls)
    arguments = optimizer_arguments(OmegaConf.to_container(cfg.optimizer, resolve=True))
    for name, rule in OPTIMIZER_RULES.items():
        if name in arguments:
            _check(f"optimizer.{name}", arguments[name], rule)
    # Dry-build and step the optimizer and scheduler on a dummy model: catches unknown
    # arguments, wrong types and the libraries' own checks before any data is touched.
    with _reported_as("optimizer"):
        _check_numbers("optimizer", arguments, partial(cls))
        optimizer = optimizer_from_config(cfg.optimizer, DUMMY_MODEL, True)
        if schedule_free.has_modes(optimizer):
            optimizer.train()
    with _reported_as("scheduler"):
        schedule_arguments = {k: v for k, v in cfg.scheduler.items() if k != LIGHTNING_KEY}
        _check_numbers("scheduler", schedule_arguments, scheduler_factory(cfg.scheduler))
        scheduler = build_scheduler(
            cfg.scheduler, optimizer, {"step": 100, "epoch": cfg.trainer.max_epochs}
        )
    _check_step(optimizer, cls)
    with _reported_as("scheduler"):
        scheduler["scheduler"].step(*([1.0] if "monitor" in scheduler else []))
    if schedule_free.has_modes(optimizer) and not schedule_free.is_constant(scheduler["scheduler"]):
        raise ConfigError(
            f"{cls.__name__} is schedule-free: it takes scheduler=constant only, not "
            f"{cfg.scheduler._target_} (its warm-up is optimizer.warmup_steps)"
        )
    _check_trainer(cfg.trainer)  # last: importing Lightning's Trainer takes seconds
