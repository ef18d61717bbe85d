"""E1's transfer model: a (pre-trained, frozen) VGG16 conv base, global pooling, a small head."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from optstudy.errors import ConfigError
from optstudy.image_size import ImageSize
from optstudy.models.vgg16_weights import load_vgg16_features

# VGG16's convolutional layout ("D" in Simonyan & Zisserman): conv widths of each stage; every
# stage ends in a 2×2 max-pool.
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def vgg16_features(in_channels: int) -> nn.Sequential:
    """VGG16's conv base with torchvision's module indices (``features.0.weight`` …), so its
    state dicts load, and its initialisation (He normal, fan-out; zero biases), so that a
    base trained from scratch keeps its activations alive through 13 layers. Pools use ceil
    mode, so inputs of any size work."""
    layers: list[nn.Module] = []
    c_in = in_channels
    for widths in VGG16_STAGES:
        for c_out in widths:
            conv = nn.Conv2d(c_in, c_out, 3, padding=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.ReLU(inplace=True)]
            c_in = c_out
        layers.append(nn.MaxPool2d(2, ceil_mode=True))
    return nn.Sequential(*layers)


class VGG16Transfer(nn.Module):
    """VGG16 conv base → global average pooling → Dense(``hidden``, relu) → BatchNorm →
    Dropout → Dense(classes), as in E1.

    ``weights``: a state dict file (torchvision's VGG16 layout, ``features.N.*`` keys; loaded
    with ``weights_only``), ``"torchvision"`` for its ImageNet weights (torchvision must be
    installed), or None to train the base from scratch. ``freeze_base`` stops the base's
    parameters from training and keeps it in eval mode; it needs pre-trained weights, as a
    frozen random base would leave only the head to learn, on random features. Weights that
    cannot be had, and a frozen base without them, are a :class:`ConfigError`. ``image_size``
    is taken like every model's but any size works: the head pools globally.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: ImageSize,
        num_classes: int,
        weights: str | Path | None = "torchvision",
        freeze_base: bool = True,
        hidden: int = 170,
        dropout: float = 0.5,
    ) -> None:
        if freeze_base and weights is None:
            raise ConfigError(
                "model.freeze_base=true needs pre-trained weights, but model.weights is null: a "
                "frozen untrained base leaves only the head to learn, on random features; set "
                "model.weights=<VGG16 state dict file> or torchvision, or model.freeze_base=false "
                "to train the whole network from scratch"
            )
        super().__init__()
        self.features = vgg16_features(in_channels)
        load_vgg16_features(self.features, weights)
        self.freeze_base = freeze_base
        self.features.requires_grad_(not freeze_base)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(512, hidden),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(hidden),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def train(self, mode: bool = True) -> VGG16Transfer:
        """Set training mode; a frozen base stays in eval mode."""
        super().train(mode)
        if self.freeze_base:
            self.features.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images."""
        return self.head(self.features(x))
