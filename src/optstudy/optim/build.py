"""Bind optimizer and scheduler configs (Hydra ``_partial_`` objects) to a model."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim import Optimizer

from optstudy.errors import ConfigError

# The block of a scheduler config that tells Lightning how to drive the scheduler (interval,
# monitor); the rest of the config builds the scheduler.
LIGHTNING_KEY = "lightning"
# The key of an optimizer config holding the tuned study's search space (argument → {low, high,
# log}), read by the study sweeper and the Optuna sweeper (optstudy.tuning).
SEARCH_SPACE_KEY = "search_space"
# Keys of an optimizer config that describe the optimizer to the project and are never passed
# to its constructor: whether it may train in a fused group, the tuned study's search space,
# and how a model's parameters split into its param groups (see :func:`param_groups`).
RESERVED_KEYS = ("fusable", SEARCH_SPACE_KEY, "param_groups")


def _hidden_matrix(name: str, param: nn.Parameter, output_layer: str) -> bool:
    return param.ndim >= 2 and name.rpartition(".")[0] != output_layer


# Parameter selectors a config's ``param_groups`` may name: (name, parameter, the output
# layer's module path) → whether the parameter belongs to the group. ``rest`` takes what the
# groups before it left.
SELECTORS: dict[str, Callable[[str, nn.Parameter, str], bool]] = {
    "hidden_matrices": _hidden_matrix,  # weights of ≥ 2 dims, except the output layer's
    "rest": lambda name, param, output_layer: True,
}


def optimizer_class(cfg: DictConfig | Mapping[str, Any]) -> type[Optimizer]:
    """The class an optimizer config's ``_target_`` names; :class:`ConfigError` when it cannot be
    imported or is not a :class:`torch.optim.Optimizer` subclass."""
    target = str(cfg.get("_target_"))
    module, _, name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"optimizer._target_={target} cannot be imported: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Optimizer)):
        raise ConfigError(
            f"optimizer._target_={target} is not an optimizer: it must name a "
            "torch.optim.Optimizer subclass"
        )
    return cls


def optimizer_arguments(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The keys of an optimizer config that go to the constructor (no ``_target_``,
    ``_partial_`` or :data:`RESERVED_KEYS`)."""
    return {k: v for k, v in cfg.items() if k not in RESERVED_KEYS and not k.startswith("_")}


def optimizer_factory(cfg: DictConfig | Mapping[str, Any]) -> partial:
    """The optimizer config as a factory taking param groups (a Hydra ``_partial_``), built
    without :data:`RESERVED_KEYS`: the one way every caller turns ``cfg.optimizer`` into an
    optimizer."""
    optimizer_class(cfg)
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    spec = {k: v for k, v in plain.items() if k not in RESERVED_KEYS}
    # Plain lists, not OmegaConf's: optimizers keep their arguments in their state, and
    # checkpoints load with weights_only.
    return instantiate({**spec, "_partial_": True, "_convert_": "all"})


def group_split(cfg: DictConfig | Mapping[str, Any]) -> dict[str, dict[str, Any]] | None:
    """An optimizer config's ``param_groups`` (selector → extra group options) as plain data,
    or None when the config has none."""
    split = cfg.get("param_groups")
    if split is None:
        return None
    return OmegaConf.to_container(split, resolve=True) if isinstance(split, DictConfig) else split


def output_layer(model: nn.Module) -> str:
    """The module path of the model's output layer: the layer of its last trainable parameter
    with two or more dimensions (the classifier's final weight in every model here)."""
    matrices = [n for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
    return matrices[-1].rpartition(".")[0] if matrices else ""


def _split(
    group: dict[str, Any], names: dict[int, str], output: str, split: Mapping[str, Mapping]
) -> list[dict[str, Any]]:
    """``group`` cut by the selectors of ``split`` in order, each part with its options; parts
    without parameters are left out."""
    left, parts = list(group["params"]), []
    for selector, options in split.items():
        chosen = [p for p in left if SELECTORS[selector](names[id(p)], p, output)]
        left = [p for p in left if all(p is not c for c in chosen)]
        if chosen:
            parts.append({**group, **options, "params": chosen})
    return parts


def param_groups(
    model: nn.Module,
    decay_norm_and_bias: bool,
    split: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Trainable parameters as optimizer groups.

    With ``decay_norm_and_bias=False``, one-dimensional parameters (biases and normalisation
    scales) go to a group with ``weight_decay=0``; the optimizer's weight decay applies to the
    rest. ``split`` (an optimizer config's ``param_groups``, e.g. Muon's) then cuts each group
    by :data:`SELECTORS`, in order, adding each selector's options to its part.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": params}]
    if not decay_norm_and_bias:
        groups = [
            {"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]
    if not split:
        return groups
    names = {id(p): name for name, p in model.named_parameters()}
    output = output_layer(model)
    return [part for group in groups for part in _split(group, names, output, split)]


def build_optimizer(
    factory: Callable[..., Optimizer],
    model: nn.Module,
    decay_norm_and_bias: bool,
    split: Mapping[str, Mapping[str, Any]] | None = None,
) -> Optimizer:
    """Call an optimizer factory (e.g. ``partial(torch.optim.Adam, lr=1e-3)``) on the model's
    param groups (see :func:`param_groups`)."""
    return factory(param_groups(model, decay_norm_and_bias, split))


def _plain(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def scheduler_factory(cfg: DictConfig | Mapping[str, Any]) -> partial:
    """The scheduler factory a scheduler config describes, without its :data:`LIGHTNING_KEY`
    block (a Hydra ``_partial_`` awaiting the optimizer)."""
    spec = _plain(cfg)
    spec.pop(LIGHTNING_KEY, None)
    return instantiate(spec)


def build_scheduler(
    cfg: DictConfig | Mapping[str, Any], optimizer: Optimizer, steps: Mapping[str, int]
) -> dict[str, Any]:
    """Build a Lightning ``lr_scheduler`` dict from a scheduler config.

    The config's ``lightning`` block says when the scheduler steps (``interval``: "step" or
    "epoch") and which metric a plateau scheduler watches (``monitor``); the rest builds the
    scheduler. A ``total_steps`` the config leaves null is filled in with the number of
    scheduler steps of the whole run, ``steps[interval]``.
    """
    driving = _plain(cfg).get(LIGHTNING_KEY) or {}
    interval, monitor = driving.get("interval", "epoch"), driving.get("monitor")
    factory = scheduler_factory(cfg)
    if factory.keywords.get("total_steps", 0) is None:
        factory = partial(factory, total_steps=steps[interval])
    out = {"scheduler": factory(optimizer), "interval": interval, "frequency": 1}
    if monitor:
        out["monitor"] = monitor
    return out


def optimizer_from_config(
    cfg: DictConfig | Mapping[str, Any], model: nn.Module, decay_norm_and_bias: bool
) -> Optimizer:
    """The optimizer an optimizer config makes for ``model``: its factory on the model's param
    groups, split as its ``param_groups`` says."""
    return build_optimizer(optimizer_factory(cfg), model, decay_norm_and_bias, group_split(cfg))
