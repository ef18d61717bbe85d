"""Shape helpers so models adapt to any input size instead of hard-coding one."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from optstudy.errors import ConfigError


def feature_size(features: nn.Module, in_channels: int, image_size: Sequence[int]) -> int:
    """Number of values ``features`` produces per example for a C×H×W input."""
    with torch.no_grad():
        try:
            out = features(torch.zeros(1, in_channels, *image_size))
        except RuntimeError as exc:
            raise ConfigError(
                f"the model cannot take {in_channels}×{'×'.join(map(str, image_size))} inputs "
                f"({str(exc).splitlines()[0]}): pick another model or a larger data.image_size"
            ) from exc
    return out[0].numel()
