"""Pre-trained weights for a VGG16 conv base: a state dict file, or torchvision's ImageNet ones."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from optstudy.errors import ConfigError

log = logging.getLogger(__name__)

PREFIX = "features."  # torchvision's VGG16 keeps its conv base under this name
# How to train without pre-trained weights on purpose (the base must train then, too).
FROM_SCRATCH = "model.weights=null model.freeze_base=false to train the whole network from scratch"


def load_vgg16_features(features: nn.Sequential, weights: str | Path | None) -> None:
    """Load ``weights`` into ``features`` (built by ``vgg16_features``): a state dict file with
    torchvision's ``features.N.*`` keys, ``"torchvision"`` for its ImageNet weights, or None to
    keep the initial weights (training from scratch). Weights that cannot be had are a
    :class:`ConfigError` saying how to get them."""
    if weights is None:
        log.info("model.weights is null: the VGG16 base trains from scratch (no transfer)")
        return
    if str(weights) == "torchvision":
        state = torchvision_vgg16_state_dict()
    else:
        state = _read_state_dict(Path(weights))
    base = {k.removeprefix(PREFIX): v for k, v in state.items() if k.startswith(PREFIX)}
    try:
        features.load_state_dict(base, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ConfigError(
            f"model.weights={weights} does not hold a VGG16 conv base ({PREFIX}N.* keys) for "
            f"this input: {detail}"
        ) from exc
    log.info("VGG16 base: pre-trained weights from %s", weights)


def torchvision_vgg16_state_dict() -> dict[str, torch.Tensor]:
    """torchvision's ImageNet VGG16 state dict (downloaded once into torch's hub cache); a
    :class:`ConfigError` when torchvision is not installed or cannot provide it."""
    try:
        from torchvision.models import VGG16_Weights
    except ImportError as exc:
        raise ConfigError(
            "model.weights=torchvision needs torchvision, which is not installed: install it "
            "(a build matching your torch; its VGG16 ImageNet weights then download once into "
            "torch's hub cache), or set model.weights=<VGG16 state dict file>, or "
            f"{FROM_SCRATCH}"
        ) from exc
    try:
        return VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    except Exception as exc:  # download and cache errors come in many types
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ConfigError(
            f"model.weights=torchvision: torchvision could not provide its VGG16 ImageNet "
            f"weights ({detail}); put them into torch's hub cache from a machine with network "
            f"access, or set model.weights=<VGG16 state dict file>, or {FROM_SCRATCH}"
        ) from exc


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ConfigError(f"model.weights={path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load fails with many types on foreign or unsafe files
        raise ConfigError(
            f"model.weights={path} is not a state dict that loads safely (weights_only): "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"model.weights={path} is not a state dict (name → tensor)")
    return state
