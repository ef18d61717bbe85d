"""Bind optimizer and scheduler configs (Hydra ``_partial_`` objects) to a model."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim import Optimizer

# Keys of a scheduler config that tell Lightning how to drive the scheduler; the rest build it.
SCHEDULE_KEYS = ("interval", "monitor")


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


def build_scheduler(
    cfg: DictConfig | Mapping[str, Any], optimizer: Optimizer, steps: Mapping[str, int]
) -> dict[str, Any]:
    """Build a Lightning ``lr_scheduler`` dict from a scheduler config.

    ``interval`` ("step" or "epoch") says when the scheduler steps; ``monitor`` names the
    metric a plateau scheduler watches. A factory with a ``total_steps`` argument the config
    leaves out gets the number of scheduler steps of the whole run, ``steps[interval]``.
    """
    spec = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    interval, monitor = spec.pop("interval", "epoch"), spec.pop("monitor", None)
    factory = instantiate(spec)
    if (
        "total_steps" in inspect.signature(factory.func).parameters
        and "total_steps" not in factory.keywords
    ):
        factory = partial(factory, total_steps=steps[interval])
    out = {"scheduler": factory(optimizer), "interval": interval, "frequency": 1}
    if monitor:
        out["monitor"] = monitor
    return out
