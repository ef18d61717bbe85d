"""A small, wide, batch-normed convnet for fast CIFAR-10 training with large batches on a GPU."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from optstudy.image_size import ImageSize


def conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    """3×3 same-padded conv without bias, then batch norm and GELU."""
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.GELU()]


class FastCifarNet(nn.Module):
    """Stem conv, then per width a block conv → 2×2 max-pool → BN → GELU → conv → BN → GELU,
    global max-pool and a bias-free linear head whose logits are multiplied by
    ``logit_scale`` (small logits early on let large learning rates work).

    With widths (64, 256, 256) it has about 1.97 M parameters; every stage halves the image
    side, so inputs down to 8×8 work.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: ImageSize,
        num_classes: int,
        stem_width: int = 32,
        widths: Sequence[int] = (64, 256, 256),
        logit_scale: float = 0.125,
    ) -> None:
        super().__init__()
        layers = conv_bn(in_channels, stem_width)
        c_in = stem_width
        for width in widths:
            layers += [
                nn.Conv2d(c_in, width, 3, padding=1, bias=False),
                nn.MaxPool2d(2),
                nn.BatchNorm2d(width),
                nn.GELU(),
                *conv_bn(width, width),
            ]
            c_in = width
        self.features = nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.head = nn.Linear(c_in, num_classes, bias=False)
        self.logit_scale = logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled logits for a batch of images."""
        return self.head(self.features(x)) * self.logit_scale
