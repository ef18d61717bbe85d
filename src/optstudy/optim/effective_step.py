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
- Adafactor (torch): ``α / c / √v̂``, v̂ its factored second moment (clamped at ε1²),
  α = max(ε2, RMS(θ)) · min(lr, 1/√t) its relative step (θ before the step) and c = max(1,
  RMS(g/√v̂)/d) its update clipping; d = the gradient.
- Muon (pytorch_optimizer): on its Muon groups ``lr · √max(1, A/B)`` (Keller Jordan's shape
  factor, A × B the weight flattened to a matrix; Moonlight's ``0.2 · √max(A, B)`` with
  ``use_adjusted_lr``), d = the orthogonalised momentum; on its AdamW groups Adam's rule.
- Lion: ``lr``, d = the sign update ``sign(β1·m + (1 − β1)·g)``.
- ADOPT: ``lr``, d = its momentum of clipped, normalised gradients ``m``.
- Prodigy: ``d·lr / (√v + d'·ε)`` (with bias correction: × √(1 − β2ᵏ⁺¹)/(1 − β1ᵏ⁺¹)), d its
  step-size estimate when the step began, d' the estimate it made, v its (d²-scaled) second
  moment; direction its (d-scaled) first moment.
- Undefined (η written as NaN): Schedule-Free AdamW and SGD (the weights they train are an
  interpolation between two sequences, whose change is no one factor of one direction) and
  SOAP (its step is elementwise only in a rotated basis). An optimizer without an entry in
  :data:`RULES` (e.g. one of your own) gets NaN as well.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.optim import (
    SGD,
    Adadelta,
    Adafactor,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    NAdam,
    Optimizer,
    RAdam,
    RMSprop,
)


@dataclass(frozen=True)
class StepStart:
    """What a step began from: its param group's values (the lr it used, Prodigy's d, …), the
    parameter (None when it was not kept) and the gradient the step used."""

    group: Mapping[str, Any]
    param: Tensor | None
    grad: Tensor | None


# (parameter state, its param group after the step with the lr the update used, what the step
# began from) → η, a tensor or one number.
Rule = Callable[[Mapping[str, Any], Mapping[str, Any], StepStart], Tensor | float]


def _step(state: Mapping[str, Any], group: Mapping[str, Any]) -> float:
    """The step count: per parameter (torch) or per group (pytorch_optimizer)."""
    return float(state["step"] if "step" in state else group["step"])


def _sgd(state: Mapping[str, Any], group: Mapping[str, Any], start: StepStart) -> float:
    return float(group["lr"])


def _undefined(state: Mapping[str, Any], group: Mapping[str, Any], start: StepStart) -> float:
    return math.nan


def _adagrad(state: Mapping[str, Any], group: Mapping[str, Any], start: StepStart) -> Tensor:
    lr = group["lr"] / (1 + (_step(state, group) - 1) * group["lr_decay"])
    return lr / (state["sum"].sqrt() + group["eps"])


def _rmsprop(state: Mapping[str, Any], group: Mapping[str, Any], start: StepStart) -> Tensor:
    square_avg = state["square_avg"]
    if "grad_avg" in state:  # centered: the variance estimate
        square_avg = square_avg - state["grad_avg"].square()
    return group["lr"] / (square_avg.sqrt() + group["eps"])


def _adam(state: Mapping[str, Any], group: Mapping[str, Any], start: StepStart) -> Tensor:
    second = state.get("max_exp_avg_sq", state["exp_avg_sq"])  # AMSGrad keeps the max
    corrected = second / (1 - group["betas"][1] ** _step(state, group))
    return group["lr"] / (corrected.sqrt() + group["eps"])


def _radam(state: Mapping[str, Any], group: Mapping[str, Any], start: StepStart) -> Tensor | float:
    beta2, t = group["betas"][1], _step(state, group)
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * t * beta2**t / (1 - beta2**t)
    if rho_t <= 5:
        return float(group["lr"])
    rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
    denominator = state["exp_avg_sq"].sqrt() + group["eps"]
    return group["lr"] * rect * math.sqrt(1 - beta2**t) / denominator


def _adamax(state: Mapping[str, Any], group: Mapping[str, Any], start: StepStart) -> Tensor:
    return group["lr"] / state["exp_inf"]


def _adadelta(state: Mapping[str, Any], group: Mapping[str, Any], start: StepStart) -> Tensor:
    eps = group["eps"]
    return group["lr"] * (state["acc_delta"] + eps).sqrt() / (state["square_avg"] + eps).sqrt()


def _rms(values: Tensor) -> float:
    return values.norm(2).item() / math.sqrt(values.numel())


def _adafactor(state: Mapping[str, Any], group: Mapping[str, Any], start: StepStart) -> Tensor:
    if start.param is None or start.grad is None:
        return math.nan  # its relative step needs the weights before the step
    eps1, eps2 = group["eps"]
    eps1 = torch.finfo(start.param.dtype).eps if eps1 is None else eps1
    step = float(state["step"])
    alpha = max(eps2, _rms(start.param)) * min(float(group["lr"]), 1 / math.sqrt(step))
    if "row_var" in state:  # factored over the last two dimensions
        row_var = state["row_var"]
        variance = row_var @ state["col_var"] / row_var.mean(dim=-2, keepdim=True).clamp(min=eps1)
    else:
        variance = state["variance"]
    inverse_root = variance.clamp(min=eps1 * eps1).rsqrt()
    clipping = max(1.0, _rms(inverse_root * start.grad) / group["d"])
    return alpha / clipping * inverse_root


def _muon(state: Mapping[str, Any], group: Mapping[str, Any], start: StepStart) -> Tensor | float:
    if not group["use_muon"]:
        return _adam(state, group, start)
    from pytorch_optimizer.optimizer.muon.base import get_adjusted_lr

    shape = start.grad.shape if start.grad is not None else state["momentum_buffer"].shape
    return float(get_adjusted_lr(group["lr"], shape, use_adjusted_lr=group["use_adjusted_lr"]))


def _prodigy(state: Mapping[str, Any], group: Mapping[str, Any], start: StepStart) -> Tensor:
    beta1, beta2 = group["betas"]
    rate = start.group["d"] * group["lr"]
    if group["use_bias_correction"]:
        k = start.group["k"] + 1
        rate *= math.sqrt(1 - beta2**k) / (1 - beta1**k)
    if "exp_avg" not in state:  # β1 = 0: it steps along the gradient, times the new d
        rate *= group["d"]
    return rate / (state["exp_avg_sq"].sqrt() + group["d"] * group["eps"])


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# The rule of each optimizer class by its import path (the optional packages' classes are not
# imported for it); subclasses use their nearest ancestor's. ``_undefined``: η is not defined.
RULES: dict[str, Rule] = {
    _name(SGD): _sgd,
    _name(Adagrad): _adagrad,
    _name(RMSprop): _rmsprop,
    _name(Adam): _adam,
    _name(AdamW): _adam,
    _name(NAdam): _adam,
    _name(RAdam): _radam,
    _name(Adamax): _adamax,
    _name(Adadelta): _adadelta,
    _name(Adafactor): _adafactor,
    "pytorch_optimizer.optimizer.muon.muon.Muon": _muon,
    "pytorch_optimizer.optimizer.lion.Lion": _sgd,
    "pytorch_optimizer.optimizer.adopt.ADOPT": _sgd,
    "prodigyopt.prodigy.Prodigy": _prodigy,
    "pytorch_optimizer.optimizer.soap.SOAP": _undefined,
    "schedulefree.adamw_schedulefree.AdamWScheduleFree": _undefined,
    "schedulefree.sgd_schedulefree.SGDScheduleFree": _undefined,
}


def rule_for(optimizer: Optimizer) -> Rule | None:
    """The effective-step rule of ``optimizer``'s class (None for an optimizer without one)."""
    return next((RULES[_name(c)] for c in type(optimizer).__mro__ if _name(c) in RULES), None)


# The step size an lr-free optimizer has estimated, from its first param group's values.
ESTIMATES: dict[str, Callable[[Mapping[str, Any]], float]] = {
    "prodigyopt.prodigy.Prodigy": lambda group: group["d"] * group["lr"],  # d·lr
}


def estimated_step_size(optimizer: Optimizer) -> float | None:
    """The step size ``optimizer`` has estimated so far (Prodigy: d·lr), None for an optimizer
    that estimates none."""
    estimate = next(
        (ESTIMATES[_name(c)] for c in type(optimizer).__mro__ if _name(c) in ESTIMATES), None
    )
    return None if estimate is None else float(estimate(optimizer.param_groups[0]))


def _values(group: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in group.items() if k != "params"}


def group_values(optimizer: Optimizer) -> list[dict[str, Any]]:
    """Each param group's values (everything but its parameters), as a step begins from them."""
    return [_values(group) for group in optimizer.param_groups]


def effective_steps(
    optimizer: Optimizer,
    groups: Sequence[Mapping[str, Any]] | None = None,
    params: Mapping[int, Tensor] | None = None,
) -> Iterator[tuple[Tensor, Tensor | float]]:
    """``(param, η)`` for every parameter of ``optimizer`` that has a gradient (the ones its
    latest step updated), η as in the module docstring: a tensor shaped like the parameter,
    or one number when all its elements share it (NaN where η is undefined). Nothing for an
    optimizer without a rule. ``groups``: each param group's values when the step began (see
    :func:`group_values`; default: as they are now, which differs once a scheduler has changed
    the lr, or Prodigy its d); ``params``: each parameter's value then, by ``id`` (Adafactor
    needs it; default: unknown)."""
    rule = rule_for(optimizer)
    if rule is None:
        return
    for number, group in enumerate(optimizer.param_groups):
        began = _values(group) if groups is None else groups[number]
        used = {**group, "lr": began["lr"]}
        for param in group["params"]:
            if param.grad is not None:
                start = StepStart(began, (params or {}).get(id(param)), param.grad)
                with torch.no_grad():  # not around the yield: it would leak to the caller
                    eta = rule(optimizer.state.get(param, {}), used, start)
                yield param, eta
