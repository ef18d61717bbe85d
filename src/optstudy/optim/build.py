"""Bind optimizer and scheduler configs (Hydra ``_partial_`` objects) to a model."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim import Optimizer

# The block of a scheduler config that tells Lightning how to drive the scheduler (interval,
# monitor); the rest of the config builds the scheduler.
LIGHTNING_KEY = "lightning"
# Keys of an optimizer config that describe the optimizer instead of being its arguments:
# ``fusable`` (its update is elementwise and linear in lr, so the members of a group can step
# as one optimizer: launcher.mode=vmap, see optstudy.fused) and ``search_space``.
RESERVED_KEYS = ("fusable", "search_space")


def param_groups(model: nn.Module, decay_norm_and_bias: bool) -> list[dict[str, Any]]:
    """Trainable parameters as optimizer groups.

    With ``decay_norm_and_bias=False``, one-dimensional parameters (biases and normalisation
    scales) go to a group with ``weight_decay=0``; the optimizer's weight decay applies to the
    rest.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_norm_and_bias:
        return [{"params": params}]
    return [
        {"params": [p for p in params if p.ndim > 1]},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def build_optimizer(
    factory: Callable[..., Optimizer], model: nn.Module, decay_norm_and_bias: bool
) -> Optimizer:
    """Call an optimizer factory (e.g. ``partial(torch.optim.Adam, lr=1e-3)``) on the model."""
    return factory(param_groups(model, decay_norm_and_bias))


def _plain(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def optimizer_factory(cfg: DictConfig | Mapping[str, Any]) -> partial:
    """The optimizer factory an optimizer config describes (a Hydra ``_partial_`` awaiting the
    parameter groups), without its :data:`RESERVED_KEYS`. Its arguments are plain Python
    values (``betas`` a list, not an OmegaConf ``ListConfig``), so the optimizer's state dict,
    and every checkpoint holding it, loads with ``weights_only=True``."""
    spec = _plain(cfg)
    for key in RESERVED_KEYS:
        spec.pop(key, None)
    return instantiate(spec, _convert_="all")


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
