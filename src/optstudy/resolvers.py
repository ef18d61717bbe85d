"""OmegaConf resolvers the configs use; registered by the entry points before Hydra composes."""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import OmegaConf


def sweep_values(values: Sequence[object]) -> str:
    """A list as a Hydra sweep override value: ``[sgd, adam]`` → ``"sgd,adam"``."""
    return ",".join(str(v) for v in values)


def register() -> None:
    """Register ``${sweep:<list>}`` (idempotent)."""
    if not OmegaConf.has_resolver("sweep"):
        OmegaConf.register_new_resolver("sweep", sweep_values)
