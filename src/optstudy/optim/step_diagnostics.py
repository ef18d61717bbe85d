"""Per-layer diagnostics of one optimizer step: gradient, parameter, update and distance norms,
and the distribution of the effective step size (:mod:`optstudy.optim.effective_step`).

A layer is the module holding a parameter: the parameter's name without its last part
(``net.features.0.weight`` and ``net.features.0.bias`` → ``net.features.0``). The layer
:data:`WHOLE_MODEL` is every trainable parameter together.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from optstudy.artifacts import WHOLE_MODEL
from optstudy.optim.effective_step import effective_steps, group_values

QUANTILES = (0.1, 0.5, 0.9)


def layer_of(name: str) -> str:
    """The layer of parameter ``name``: the module path holding it."""
    return name.rpartition(".")[0] or name


def quantiles(values: Tensor, qs: Sequence[float] = QUANTILES) -> list[float]:
    """The ``qs`` quantiles of ``values`` with linear interpolation between order statistics
    (numpy's default), by ``torch.kthvalue``, which unlike ``torch.quantile`` takes inputs of
    any size. NaN for an empty ``values``."""
    flat = values.reshape(-1)
    n = flat.numel()
    if n == 0:
        return [math.nan] * len(qs)
    out = []
    for q in qs:
        position = q * (n - 1)
        below = math.floor(position)
        low = flat.kthvalue(below + 1).values
        if position > below:
            low = low + (position - below) * (flat.kthvalue(below + 2).values - low)
        out.append(low)
    return torch.stack(out).tolist()


def _squared_norm(values: Tensor) -> Tensor:
    return torch.linalg.vector_norm(values.float()).square()


@dataclass(frozen=True)
class Snapshot:
    """What a step's diagnostics need from before the step: its number, epoch, the parameters
    and their gradients' squared norms (by name; some optimizers change the gradient in place
    as they step) and the values of each param group (its lr, Prodigy's d, …)."""

    step: int
    epoch: int
    params: dict[str, Tensor]
    grad_squares: dict[str, Tensor]
    groups: list[dict]


def take_snapshot(
    step: int, epoch: int, params: Iterable[tuple[str, Tensor]], optimizer: Optimizer
) -> Snapshot:
    """Copy the ``params``, their gradients' squared norms and the param group values of
    ``optimizer`` just before its step."""
    copies, grads = {}, {}
    with torch.no_grad():
        for name, p in params:
            copies[name] = p.detach().clone()
            grads[name] = _squared_norm(torch.zeros(()) if p.grad is None else p.grad)
    return Snapshot(step, epoch, copies, grads, group_values(optimizer))


def _row(before: Snapshot, layer: str, sums: list[list[float]], etas: list[Tensor]) -> dict:
    """The row of ``layer`` from its parameters' squared norms (gradient, parameter, update,
    distance) and effective step sizes."""
    grad, param, update, distance = (math.sqrt(sum(s[i] for s in sums)) for i in range(4))
    p10, median, p90 = quantiles(torch.cat(etas) if etas else torch.empty(0))
    return {
        "step": before.step,
        "epoch": before.epoch,
        "layer": layer,
        "grad_norm": grad,
        "param_norm": param,
        "update_norm": update,
        "update_ratio": update / param if param else math.nan,
        "distance_from_init": distance,
        "eff_step_p10": p10,
        "eff_step_median": median,
        "eff_step_p90": p90,
    }


def measure(
    before: Snapshot,
    params: dict[str, nn.Parameter],
    initial: dict[str, Tensor],
    optimizer: Optimizer,
) -> list[dict[str, float | int | str]]:
    """The rows (diagnostics.csv's columns) of the step ``optimizer`` just took from ``before``:
    one for :data:`WHOLE_MODEL`, then one per layer. ``params``: the trainable parameters by
    name, as they are after the step; ``initial``: their values at the start of training."""
    started = {id(p): before.params[name] for name, p in params.items()}
    steps = {id(p): eta for p, eta in effective_steps(optimizer, before.groups, started)}
    squares, etas = [], []
    with torch.no_grad():
        for name, p in params.items():
            old = before.params[name]
            moved = (p - old, old - initial[name].to(old.device))
            norms = [_squared_norm(t) for t in (old, *moved)]
            squares.append(torch.stack([before.grad_squares[name].to(old.device), *norms]))
            eta = steps.get(id(p))
            etas.append(None if eta is None else torch.as_tensor(eta).to(p).expand(p.shape))
        sums = torch.stack(squares).tolist()
        layers: dict[str, list[int]] = {WHOLE_MODEL: list(range(len(params)))}
        for number, name in enumerate(params):
            layers.setdefault(layer_of(name), []).append(number)
        return [
            _row(
                before,
                layer,
                [sums[i] for i in members],
                [etas[i].reshape(-1) for i in members if etas[i] is not None],
            )
            for layer, members in layers.items()
        ]
