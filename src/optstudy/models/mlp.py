"""Fully connected classifier (E3: Flatten → Dense(128, relu) → Dense(classes))."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from torch import nn

from optstudy.image_size import ImageSize, image_hw


class MLP(nn.Sequential):
    """Flatten, then ReLU hidden layers of the given widths, then a linear output layer."""

    def __init__(
        self, in_channels: int, image_size: ImageSize, num_classes: int, hidden: Sequence[int]
    ) -> None:
        widths = [in_channels * math.prod(image_hw(image_size)), *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for w_in, w_out in itertools.pairwise(widths):
            layers += [nn.Linear(w_in, w_out), nn.ReLU()]
        super().__init__(*layers, nn.Linear(widths[-1], num_classes))
