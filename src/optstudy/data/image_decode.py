"""Decode one image file with Pillow into an RGB uint8 array of a fixed size."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def decode_rgb(path: Path, image_size: Sequence[int]) -> np.ndarray:
    """H×W×3 uint8 pixels of ``path``: any mode (L, RGBA, P, CMYK, …) converted to RGB (alpha
    dropped), resized bilinearly to ``image_size`` (height, width) unless already that size."""
    height, width = image_size
    with Image.open(path) as image:
        if image.mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")  # Pillow's advice for palettes with transparency
        rgb = image.convert("RGB")
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)
