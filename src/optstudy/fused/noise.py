"""Each member's randomness from its own seed: its random-number stream, and dropout masks drawn
from it outside the fused forward.

A standalone run draws from torch's global generator: first the weight initialisation, then at
every training step the batch augmentation and the dropout masks of the forward pass. A member
keeps that generator's state as its own (:class:`MemberRng`) and makes the same draws in the
same order with it swapped in: its augmentation and its masks are those of its standalone run
(on the CPU exactly; CUDA's dropout kernel draws its masks differently). The fused forward
itself draws nothing (``vmap`` runs with ``randomness="error"``): its dropout layers
(:class:`MaskedDropout`) apply the masks they are given.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


class MemberRng:
    """The state of one member's random-number stream: torch's CPU generator and, on a GPU,
    that device's generator (seeded as ``pl.seed_everything`` seeds it)."""

    def __init__(self, cpu_state: torch.Tensor, seed: int) -> None:
        self.cpu = cpu_state
        self.seed = seed
        self.device: torch.Tensor | None = None  # the GPU generator's state, once used

    @classmethod
    def current(cls, seed: int) -> MemberRng:
        """The global generator's state now (after seeding with ``seed`` and initialising the
        member's weights)."""
        return cls(torch.get_rng_state(), seed)

    @contextmanager
    def active(self, device: torch.device) -> Iterator[None]:
        """Draw from this member's stream inside the block (the global generators of the CPU
        and of ``device``), then put the previous states back."""
        cuda = device.type == "cuda"
        saved_cpu = torch.get_rng_state()
        saved_gpu = torch.cuda.get_rng_state(device) if cuda else None
        torch.set_rng_state(self.cpu)
        if cuda:
            if self.device is None:
                self.device = torch.Generator(device).manual_seed(self.seed).get_state()
            torch.cuda.set_rng_state(self.device, device)
        try:
            yield
        finally:
            self.cpu = torch.get_rng_state()
            torch.set_rng_state(saved_cpu)
            if cuda:
                self.device = torch.cuda.get_rng_state(device)
                torch.cuda.set_rng_state(saved_gpu, device)

    def state_dict(self) -> dict[str, torch.Tensor | int | None]:
        """The generator states, for checkpoints."""
        return {"cpu": self.cpu, "device": self.device, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        """Restore the generator states of a checkpoint."""
        self.cpu, self.device, self.seed = state["cpu"], state["device"], state["seed"]


class MaskedDropout(nn.Module):
    """Dropout that multiplies by a mask drawn beforehand (:func:`draw_masks`), as
    ``nn.Dropout`` computes it; the identity in eval mode or with p = 0. The mask is a buffer
    that is no part of the state dict: the fused forward passes it to ``functional_call`` with
    the weights."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.register_buffer("mask", None, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` times the mask in training, else ``x``."""
        if not self.training or self.p == 0:
            return x
        if self.mask is None:
            raise RuntimeError("MaskedDropout got no mask for a training forward pass")
        return x * self.mask


@dataclass(frozen=True)
class DropoutSite:
    """A dropout layer of the network that draws masks: its buffer's name for
    ``functional_call``, its drop probability and the shape of one example's input."""

    mask_name: str
    p: float
    shape: tuple[int, ...]


def masked_dropout_sites(net: nn.Module, example_shape: Sequence[int]) -> list[DropoutSite]:
    """Replace every ``nn.Dropout`` of ``net`` by a :class:`MaskedDropout` and return those that
    draw masks (p > 0; p = 0 draws nothing) in the order a forward pass calls them, with the
    per-example shape of their inputs (found by one forward pass of a zero example in eval
    mode)."""
    for name, module in list(net.named_modules()):
        if type(module) is nn.Dropout:
            parent, _, leaf = name.rpartition(".")
            net.get_submodule(parent).register_module(leaf, MaskedDropout(module.p))
    sites: list[DropoutSite] = []
    names = {module: name for name, module in net.named_modules()}

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        mask = f"{names[module]}.mask".lstrip(".")
        sites.append(DropoutSite(mask, module.p, tuple(inputs[0].shape[1:])))

    drawing = [m for m in net.modules() if isinstance(m, MaskedDropout) and m.p > 0]
    hooks = [m.register_forward_pre_hook(record) for m in drawing]
    training = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros(1, *example_shape, device=next(net.parameters()).device))
    finally:
        net.train(training)
        for hook in hooks:
            hook.remove()
    return sites


def random_modules(net: nn.Module) -> list[str]:
    """The modules of ``net`` that draw random numbers in their forward pass and that
    :func:`masked_dropout_sites` cannot take over (dropout variants other than ``nn.Dropout``)."""
    return [
        f"{name} ({type(module).__name__})"
        for name, module in net.named_modules()
        if isinstance(module, nn.modules.dropout._DropoutNd) and type(module) is not nn.Dropout
    ]


def draw_masks(
    sites: Sequence[DropoutSite], batch: int, device: torch.device
) -> list[torch.Tensor]:
    """One training step's masks of the dropout ``sites`` for a batch of ``batch`` examples,
    drawn from the active generator as ``nn.Dropout`` draws them: Bernoulli(1 − p) divided by
    1 − p (p = 1 draws nothing and drops everything)."""
    masks = []
    for site in sites:
        p, shape = site.p, (batch, *site.shape)
        if p == 1:
            masks.append(torch.zeros(shape, device=device))
        else:
            masks.append(torch.empty(shape, device=device).bernoulli_(1 - p).div_(1 - p))
    return masks
