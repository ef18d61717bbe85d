"""LeNet-5 (LeCun et al., 1998) with ReLU and max pooling, as used in E2."""

from __future__ import annotations

from torch import nn

from optstudy.image_size import ImageSize
from optstudy.models.shapes import feature_size


class LeNet5(nn.Module):
    """conv5(6) → pool → conv5(16) → pool → fc120 → fc84 → fc(classes).

    ``padding`` pads both convolutions: 2 keeps the spatial size ("same"), so even 8×8 inputs
    work; 0 is the classic 32×32 layout.
    """

    def __init__(
        self, in_channels: int, image_size: ImageSize, num_classes: int, padding: int = 2
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=padding),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(6, 16, 5, padding=padding),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(feature_size(self.features, in_channels, image_size), 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        """Logits for a batch of images."""
        return self.classifier(self.features(x))
