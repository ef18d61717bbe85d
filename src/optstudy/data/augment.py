"""Random augmentation of whole training batches on their device, with vectorised torch ops."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from optstudy.errors import ConfigError

PADDING_MODES = ("zeros", "border", "reflection")

# Allowed values of the settings, with how to say them in an error.
RULES = {
    "crop_padding": (lambda v: isinstance(v, int) and v >= 0, "a pixel count >= 0"),
    "max_rotation": (lambda v: isinstance(v, int | float) and 0 <= v <= 180, "in [0, 180]"),
    "cutout": (lambda v: isinstance(v, int) and v >= 0, "a pixel count >= 0"),
    "padding_mode": (lambda v: v in PADDING_MODES, f"one of {', '.join(PADDING_MODES)}"),
}


class BatchAugment:
    """Augment a normalised float batch (N×C×H×W), each image with its own random draw.

    ``hflip``: mirror left-right with probability ½. ``crop_padding``: random crop of the image
    padded by this many pixels (an integer shift in [−p, p] along each axis).
    ``max_rotation``: rotate by a uniform angle in [−max, max] degrees. ``cutout``: blank a
    square of this side at a uniform random centre (clipped at the borders). Crop and rotation
    are one ``grid_sample`` call; pixels from outside the image are filled by ``padding_mode``
    ("zeros" is the data set's mean colour, as the batch is normalised). Randomness comes from
    torch's global generator of the batch's device (seeded by the run's seed).
    """

    def __init__(
        self,
        hflip: bool = False,
        crop_padding: int = 0,
        max_rotation: float = 0.0,
        cutout: int = 0,
        padding_mode: str = "zeros",
    ) -> None:
        settings = {
            "crop_padding": crop_padding,
            "max_rotation": max_rotation,
            "cutout": cutout,
            "padding_mode": padding_mode,
        }
        for key, (ok, allowed) in RULES.items():
            if not ok(settings[key]):
                raise ConfigError(f"augment.{key}={settings[key]} is invalid: must be {allowed}")
        self.hflip = hflip
        self.crop_padding = crop_padding
        self.max_rotation = float(max_rotation)
        self.cutout = cutout
        self.padding_mode = padding_mode

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """A randomly augmented copy of ``images`` (``images`` itself when nothing is on)."""
        if self.hflip:
            flip = torch.rand(len(images), 1, 1, 1, device=images.device) < 0.5
            images = torch.where(flip, images.flip(-1), images)
        if self.crop_padding or self.max_rotation:
            images = self._shift_and_rotate(images)
        if self.cutout:
            images = self._cut_out(images)
        return images

    def _shift_and_rotate(self, images: torch.Tensor) -> torch.Tensor:
        n, _, h, w = images.shape
        device, dtype = images.device, images.dtype
        angle = (torch.rand(n, device=device, dtype=dtype) * 2 - 1) * math.radians(
            self.max_rotation
        )
        p = self.crop_padding
        shift = torch.randint(-p, p + 1, (n, 2), device=device).to(dtype)  # pixels (x, y)
        cos, sin = angle.cos(), angle.sin()
        # Output → input sampling map in normalised coordinates ([-1, 1] across each axis):
        # a rotation about the centre (corrected for the aspect ratio), then the crop's shift.
        theta = torch.stack(
            [
                torch.stack([cos, -sin * h / w, shift[:, 0] * 2 / w], dim=1),
                torch.stack([sin * w / h, cos, shift[:, 1] * 2 / h], dim=1),
            ],
            dim=1,
        )
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        mode = "bilinear" if self.max_rotation else "nearest"  # nearest: exact integer crops
        return F.grid_sample(
            images, grid, mode=mode, padding_mode=self.padding_mode, align_corners=False
        )

    def _cut_out(self, images: torch.Tensor) -> torch.Tensor:
        n, _, h, w = images.shape
        device = images.device
        top = torch.randint(0, h, (n, 1, 1), device=device) - self.cutout // 2
        left = torch.randint(0, w, (n, 1, 1), device=device) - self.cutout // 2
        rows = torch.arange(h, device=device).view(1, h, 1)
        cols = torch.arange(w, device=device).view(1, 1, w)
        square = (rows >= top) & (rows < top + self.cutout) & (cols >= left)
        square &= cols < left + self.cutout
        return images.masked_fill(square[:, None], 0.0)
