"""A small VGG-style net: stages of 3×3 conv-BN-ReLU layers, each ending in 2×2 max-pool."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from optstudy.image_size import ImageSize
from optstudy.models.shapes import feature_size


class VGGSmall(nn.Module):
    """``stages`` lists the conv widths of each stage, e.g. [[32, 32], [64, 64], [128, 128]]."""

    def __init__(
        self,
        in_channels: int,
        image_size: ImageSize,
        num_classes: int,
        stages: Sequence[Sequence[int]],
        hidden: int = 256,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for widths in stages:
            for c_out in widths:
                layers += [
                    nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                    nn.BatchNorm2d(c_out),
                    nn.ReLU(inplace=True),
                ]
                c_in = c_out
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.classifier = nn.Sequential(
            nn.Linear(feature_size(self.features, in_channels, image_size), hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        """Logits for a batch of images."""
        return self.classifier(self.features(x))
