"""Pre-trained weights for a VGG16 conv base: a state dict file, or torchvision's when installed."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from optstudy.errors import ConfigError

log = logging.getLogger(__name__)

PREFIX = "features."  # torchvision's VGG16 keeps its conv base under this name


def load_vgg16_features(features: nn.Sequential, weights: str | Path | None) -> None:
    """Load ``weights`` into ``features`` (built by ``vgg16_features``): a state dict file with
    torchvision's ``features.N.*`` keys, ``"torchvision"`` for its ImageNet weights, or None."""
    if weights is None:
        log.warning("model.weights is null: the VGG16 base trains from scratch (no transfer)")
        return
    if str(weights) == "torchvision":
        state = torchvision_vgg16_state_dict()
        if state is None:
            log.warning(
                "torchvision is not installed, so no pre-trained VGG16 weights: the base trains "
                "from scratch; set model.weights=<state dict file> for transfer learning"
            )
            return
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


def torchvision_vgg16_state_dict() -> dict[str, torch.Tensor] | None:
    """torchvision's ImageNet VGG16 state dict (downloaded once into torch's hub cache), or None
    when torchvision is not installed."""
    try:
        from torchvision.models import VGG16_Weights
    except ImportError:
        return None
    try:
        return VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    except Exception as exc:  # download and cache errors come in many types
        raise ConfigError(
            f"torchvision could not provide its VGG16 ImageNet weights ({exc}); set "
            "model.weights=<state dict file>, or model.weights=null to train from scratch"
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
