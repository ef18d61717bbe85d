"""The memory layout of image batches and conv weights."""

from __future__ import annotations

import torch


def input_memory_format(channels_last: bool | None, device: torch.device) -> torch.memory_format:
    """``torch.channels_last`` (NHWC) when ``channels_last`` is true, or when it is None and
    ``device`` is a GPU (where conv kernels run faster on it); else the default NCHW layout."""
    if channels_last is None:
        channels_last = device.type == "cuda"
    return torch.channels_last if channels_last else torch.contiguous_format
