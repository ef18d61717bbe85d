"""Shape helpers so models adapt to any input size instead of hard-coding one."""

from __future__ import annotations

import torch
from torch import nn

from optstudy.errors import ConfigError
from optstudy.image_size import ImageSize, image_hw


def feature_size(features: nn.Module, in_channels: int, image_size: ImageSize) -> int:
    """Number of values ``features`` produces per example for a C×H×W input (``image_size``:
    n for n×n, or [h, w])."""
    height, width = image_hw(image_size)
    with torch.no_grad():
        try:
            out = features(torch.zeros(1, in_channels, height, width))
        except RuntimeError as exc:
            raise ConfigError(
                f"the model cannot take {in_channels}×{height}×{width} inputs "
                f"({str(exc).splitlines()[0]}): pick another model or a larger data.image_size"
            ) from exc
    return out[0].numel()
