"""The resolved run config, as plain data without secrets, handed to every Lightning logger."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger

REDACTED = "<redacted>"

# Environment variables whose values must never reach a logger.
SECRET_ENV_VARS = ("WANDB_API_KEY",)


def _redact(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, dict):
        return {key: _redact(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact(item, secrets) for item in value]
    if isinstance(value, str) and any(secret in value for secret in secrets):
        return REDACTED
    return value


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """``cfg`` resolved into plain dicts and lists; any string holding the value of a secret
    environment variable (the W&B API key) becomes ``"<redacted>"``."""
    secrets = [os.environ[name] for name in SECRET_ENV_VARS if os.environ.get(name)]
    return _redact(OmegaConf.to_container(cfg, resolve=True), secrets)


def log_config(loggers: Iterable[Logger], cfg: DictConfig) -> None:
    """Give every logger the run's resolved config as its hyperparameters."""
    params = plain_config(cfg)
    for logger in loggers:
        logger.log_hyperparams(params)
