"""The small convnets of the DeepOBS benchmark (Schneider et al., 2019), size-adaptive."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from torch import nn

from optstudy.image_size import ImageSize
from optstudy.models.shapes import feature_size


def same_pool(kernel: int) -> nn.MaxPool2d:
    """Stride-2 max-pool with TensorFlow's "same" output size, ceil(n / 2), for kernel 2 or 3."""
    return nn.MaxPool2d(kernel, stride=2, padding=(kernel - 1) // 2, ceil_mode=kernel % 2 == 0)


class ConvNet(nn.Module):
    """Conv(k×k, same) → ReLU → MaxPool blocks, then ReLU dense layers and a linear output.

    ``conv`` lists ``[channels, kernel]`` per block and ``dense`` the hidden widths:
    DeepOBS's 2c2d is conv [[32, 5], [64, 5]] dense [1024]; its 3c3d is
    conv [[64, 5], [96, 3], [128, 3]] dense [512, 256] with 3×3 stride-2 pooling.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: ImageSize,
        num_classes: int,
        conv: Sequence[Sequence[int]],
        dense: Sequence[int],
        pool_kernel: int = 2,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for c_out, k in conv:
            layers += [
                nn.Conv2d(c_in, c_out, k, padding=k // 2),
                nn.ReLU(),
                same_pool(pool_kernel),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers, nn.Flatten())
        widths = [feature_size(self.features, in_channels, image_size), *dense]
        head: list[nn.Module] = []
        for w_in, w_out in itertools.pairwise(widths):
            head += [nn.Linear(w_in, w_out), nn.ReLU()]
        self.classifier = nn.Sequential(*head, nn.Linear(widths[-1], num_classes))

    def forward(self, x):
        """Logits for a batch of images."""
        return self.classifier(self.features(x))
