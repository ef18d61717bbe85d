"""``data.image_size``: one integer (a square) or ``[height, width]``, read through one function."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optstudy.errors import ConfigError

ImageSize = int | Sequence[int]


def image_hw(value: Any) -> tuple[int, int]:
    """(height, width) of a ``data.image_size`` value: ``n`` is n×n, ``[h, w]`` is h×w; any
    other value (a string, a float, one or three numbers, a size below 1) is a ConfigError."""
    if _is_side(value):
        return value, value
    if (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 2
        and all(_is_side(side) for side in value)
    ):
        return value[0], value[1]
    shown = f"'{value}'" if isinstance(value, str) else value  # '32' is a string, 32 is not
    raise ConfigError(
        f"data.image_size={shown} is invalid: must be an integer >= 1 (a square, e.g. 32) "
        "or [height, width] of integers >= 1 (e.g. [32,48])"
    )


def _is_side(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
