"""The memory layout of image batches and conv weights."""

from __future__ import annotations

import torch


def input_memory_format(channels_last: bool | None, device: torch.device) -> torch.memory_format:
    """``torch.channels_last`` (NHWC) when ``channels_last`` is true, or when it is None and
    ``device`` is a GPU (where conv kernels run faster on it); else the default NCHW layout."""
    if channels_last is None:
        channels_last = device.type == "cuda"
    return torch.channels_last if channels_last else torch.contiguous_format


def per_member_layout(t: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """A stacked tensor (member × N × C × H × W: a batch of each member, or stacked conv
    weights) laid out so that each member's slice has ``memory_format``; other tensors as
    they are."""
    if memory_format != torch.channels_last or t.ndim != 5:
        return t
    return t.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
