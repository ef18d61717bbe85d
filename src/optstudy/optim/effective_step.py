"""The effective per-parameter step size of an optimizer's latest update, read from its state.

The effective step η of a parameter is the factor its latest update applied to one unit of the
direction the optimizer follows: ``Δθ = −η · d`` with ``d`` the gradient (SGD, AdaGrad,
RMSprop, Adadelta; with momentum, the gradient entering the momentum buffer) or the
bias-corrected first moment ``m̂ = m / (1 − β1ᵗ)`` (Adam, AdamW, Adamax, RAdam; for NAdam its
Nesterov mix of gradient and momentum). Coupled weight decay is part of the gradient, decoupled
decay (AdamW) is not part of the step. ``lr`` is the group's lr the update used.

- SGD (plain, momentum, Nesterov): ``lr``, the same for every parameter.
- AdaGrad: ``lr / (1 + (t − 1) · lr_decay) / (√G + ε)``, G the sum of squared gradients.
- RMSprop: ``lr / (√v + ε)``, v the squared-gradient average (centered: ``v − ḡ²``).
- Adam, AdamW, NAdam: ``lr / (√v̂ + ε)``, ``v̂ = v / (1 − β2ᵗ)`` (AMSGrad: v its running max).
- RAdam: ``lr · r_t · √(1 − β2ᵗ) / (√v + ε)`` once its rectifier r_t is defined (ρ_t > 5),
  before that ``lr`` (it steps like SGD with momentum).
- Adamax: ``lr / u``, u its infinity-norm average.
- Adadelta: ``lr · √(Δ + ε) / √(v + ε)``, with Δ its average of squared updates. Adadelta
  updates Δ after using it, so this (read after the step) already includes the latest update:
  it is the factor the next step would apply if v stayed as it is. For every other rule the
  state read after the step gives exactly the factor that step applied.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import (
    SGD,
    Adadelta,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    NAdam,
    Optimizer,
    RAdam,
    RMSprop,
)

# (parameter state, its param group with the lr the update used) → η, a tensor or one number.
Rule = Callable[[Mapping[str, Any], Mapping[str, Any]], Tensor | float]


def _step(state: Mapping[str, Any]) -> float:
    return float(state["step"])


def _sgd(state: Mapping[str, Any], group: Mapping[str, Any]) -> float:
    return float(group["lr"])


def _adagrad(state: Mapping[str, Any], group: Mapping[str, Any]) -> Tensor:
    lr = group["lr"] / (1 + (_step(state) - 1) * group["lr_decay"])
    return lr / (state["sum"].sqrt() + group["eps"])


def _rmsprop(state: Mapping[str, Any], group: Mapping[str, Any]) -> Tensor:
    square_avg = state["square_avg"]
    if "grad_avg" in state:  # centered: the variance estimate
        square_avg = square_avg - state["grad_avg"].square()
    return group["lr"] / (square_avg.sqrt() + group["eps"])


def _adam(state: Mapping[str, Any], group: Mapping[str, Any]) -> Tensor:
    second = state.get("max_exp_avg_sq", state["exp_avg_sq"])  # AMSGrad keeps the max
    corrected = second / (1 - group["betas"][1] ** _step(state))
    return group["lr"] / (corrected.sqrt() + group["eps"])


def _radam(state: Mapping[str, Any], group: Mapping[str, Any]) -> Tensor | float:
    beta2, t = group["betas"][1], _step(state)
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * t * beta2**t / (1 - beta2**t)
    if rho_t <= 5:
        return float(group["lr"])
    rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
    denominator = state["exp_avg_sq"].sqrt() + group["eps"]
    return group["lr"] * rect * math.sqrt(1 - beta2**t) / denominator


def _adamax(state: Mapping[str, Any], group: Mapping[str, Any]) -> Tensor:
    return group["lr"] / state["exp_inf"]


def _adadelta(state: Mapping[str, Any], group: Mapping[str, Any]) -> Tensor:
    eps = group["eps"]
    return group["lr"] * (state["acc_delta"] + eps).sqrt() / (state["square_avg"] + eps).sqrt()


# The rule of each optimizer class; subclasses use their nearest ancestor's.
RULES: dict[type[Optimizer], Rule] = {
    SGD: _sgd,
    Adagrad: _adagrad,
    RMSprop: _rmsprop,
    Adam: _adam,
    AdamW: _adam,
    NAdam: _adam,
    RAdam: _radam,
    Adamax: _adamax,
    Adadelta: _adadelta,
}


def rule_for(optimizer: Optimizer) -> Rule | None:
    """The effective-step rule of ``optimizer``'s class (None for an optimizer without one)."""
    return next((RULES[c] for c in type(optimizer).__mro__ if c in RULES), None)


def effective_steps(
    optimizer: Optimizer, lrs: Sequence[float] | None = None
) -> Iterator[tuple[Tensor, Tensor | float]]:
    """``(param, η)`` for every parameter of ``optimizer`` that has a gradient (the ones its
    latest step updated), η as in the module docstring: a tensor shaped like the parameter,
    or one number when all its elements share it. Nothing for an optimizer without a rule.
    ``lrs``: the lr of each param group at that step, when a scheduler has changed them since
    (default: the groups' current lrs)."""
    rule = rule_for(optimizer)
    if rule is None:
        return
    for number, group in enumerate(optimizer.param_groups):
        used = {**group, "lr": group["lr"] if lrs is None else lrs[number]}
        for param in group["params"]:
            if param.grad is not None:
                with torch.no_grad():  # not around the yield: it would leak to the caller
                    eta = rule(optimizer.state.get(param, {}), used)
                yield param, eta
