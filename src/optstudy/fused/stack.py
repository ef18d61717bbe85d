"""The weights of a group's members stacked into one module: every tensor gets the member as
its leading dimension, so one ``vmap`` call runs all members' forward passes.

Trainable parameters and buffers (batch-norm statistics) are stacked (``torch.func.
stack_module_state``); a frozen parameter that every member holds with the same value (a
pre-trained base) is kept once and shared. :class:`StackedNet` holds them under the network's
own names, so its state dict reads like the network's with one more dimension.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import stack_module_state


def _holder(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The (new) sub-module of ``root`` that holds the tensor ``name``, and its own name."""
    *path, leaf = name.split(".")
    module = root
    for part in path:
        if not hasattr(module, part):
            module.add_module(part, nn.Module())
        module = getattr(module, part)
    return module, leaf


class StackedNet(nn.Module):
    """The members' networks as stacked tensors, named as in one network: trainable
    parameters (member × …), per-member buffers and frozen parameters (member × …, as buffers),
    and shared frozen parameters (as in one network, as buffers)."""

    def __init__(self, nets: Sequence[nn.Module]) -> None:
        super().__init__()
        params, buffers = stack_module_state(list(nets))
        self.shared_names: tuple[str, ...] = ()
        for name, stacked in params.items():
            holder, leaf = _holder(self, name)
            if stacked.requires_grad:
                holder.register_parameter(leaf, nn.Parameter(stacked))
            elif all(torch.equal(stacked[0], other) for other in stacked[1:]):
                holder.register_buffer(leaf, stacked[0].clone())
                self.shared_names += (name,)
            else:
                holder.register_buffer(leaf, stacked)
        for name, stacked in buffers.items():
            holder, leaf = _holder(self, name)
            holder.register_buffer(leaf, stacked)

    def per_member(self) -> dict[str, Tensor]:
        """Every stacked tensor (trainable parameters first), member × …, by its name."""
        tensors = dict(self.named_parameters())
        tensors.update(
            (name, t) for name, t in self.named_buffers() if name not in self.shared_names
        )
        return tensors

    def shared(self) -> dict[str, Tensor]:
        """The frozen parameters every member shares, by name."""
        return {name: t for name, t in self.named_buffers() if name in self.shared_names}

    def member(self, index: int) -> dict[str, Tensor]:
        """Member ``index``'s network state (every parameter and buffer) by name: views, not
        copies."""
        return {**{n: t[index] for n, t in self.per_member().items()}, **self.shared()}
