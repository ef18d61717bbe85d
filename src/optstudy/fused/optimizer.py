"""One torch optimizer steps every member of a group, each with its own lr.

**The rule.** An optimizer whose update is elementwise and linear in lr,

    θ' = θ − lr · u(g, θ, state),   with the state updated without lr,

steps the stacked parameters once with lr = 1, which gives every member's update u, and then
moves each member by its own lr along it: θ'ₘ = θₘ + lrₘ · (θ⁽¹⁾ₘ − θₘ). The optimizer state
(moments, accumulators, step counts) is then exactly the state each member's own optimizer
would hold, and a member's schedule only has to change its lrₘ.

It holds for the optimizers of ``conf/optimizer/`` whose configs say ``fusable: true``:
SGD with momentum, dampening, Nesterov and coupled weight decay (the buffer is built from the
gradient alone); Adagrad, whose ``lr / (1 + (t−1)·lr_decay)`` is lr times a factor of t;
RMSprop (momentum, centered); Adadelta, whose Δ average is built from the lr-free update;
Adam and AdamW (AMSGrad; AdamW's decoupled decay θ(1 − lr·λ) is linear in lr too), NAdam
(its momentum schedule depends on t, not lr), RAdam, Adamax, ADOPT, and Lion (a sign per
weight, its momentum never sees lr). It fails for updates that are not elementwise or not
linear in lr: matrix methods (Muon, SOAP, Shampoo) would mix the members of a stacked tensor,
so would estimates over all parameters (Prodigy's d, Adafactor's factored moments and
relative step), trust-ratio methods (LARS, LAMB) too; Schedule-Free's averaging weights
depend on lr, and a line search (L-BFGS) picks its own step. Their configs say
``fusable: false`` and their groups train one member after another.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer


def stacked_param_groups(
    groups: Sequence[Mapping[str, Any]], names: Mapping[int, str], stacked: Mapping[str, Tensor]
) -> list[dict[str, Any]]:
    """The param groups of one member's network (:func:`optstudy.optim.param_groups`) with each
    parameter replaced by its stacked tensor; ``names``: parameter id → its name."""
    return [
        {**group, "params": [stacked[names[id(p)]] for p in group["params"]]} for group in groups
    ]


def build_fused_optimizer(
    factory: Callable[..., Optimizer], groups: list[dict[str, Any]]
) -> Optimizer:
    """The group's optimizer over stacked param groups, stepping with lr = 1 (see the rule)."""
    return factory(groups, lr=1.0)


def step_members(
    optimizer: Optimizer, lrs: Callable[[], Tensor], closure: Callable[[], Any] | None = None
) -> Any:
    """Step ``optimizer`` (lr = 1; ``closure`` computes the gradients, as for any torch
    optimizer) and move each member by its own lr along its update.

    ``lrs()``, asked after the closure has run: member × param group; a member whose lrs are
    all zero (stopped, or diverged in this step) keeps its parameters exactly. Returns what
    the optimizer's step returns."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    before = [p.detach().clone() for p in params]
    result = optimizer.step(closure) if closure is not None else optimizer.step()
    scales = lrs()
    frozen = (scales == 0).all(dim=1)
    any_frozen = bool(frozen.any())
    olds = iter(before)
    with torch.no_grad():
        for number, group in enumerate(optimizer.param_groups):
            for p in group["params"]:
                old = next(olds)
                scale = scales[:, number].to(p.dtype).view(-1, *[1] * (p.ndim - 1))
                p.sub_(old).mul_(scale).add_(old)
                if any_frozen:  # exactly as they were, even where the update is not finite
                    p[frozen] = old[frozen]
    return result


def clip_member_grad_norms(params: Sequence[Tensor], max_norm: float) -> None:
    """Clip each member's gradient to the global norm ``max_norm`` on its own, as
    ``torch.nn.utils.clip_grad_norm_`` clips a standalone run's: the member's L2 norm over all
    its gradients, each scaled by ``min(1, max_norm / (norm + 1e-6))``."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads])
    total = torch.linalg.vector_norm(norms, dim=0)
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for grad in grads:
        grad.mul_(scale.to(grad.dtype).view(-1, *[1] * (grad.ndim - 1)))


def member_param(stacked: Tensor, index: int) -> nn.Parameter:
    """Member ``index``'s slice of a stacked parameter as a parameter of its own (sharing its
    memory), with its slice of the gradient."""
    param = nn.Parameter(stacked.detach()[index], requires_grad=stacked.requires_grad)
    if stacked.grad is not None:
        param.grad = stacked.grad[index]
    return param


def member_optimizer(
    optimizer: Optimizer, index: int, params: Mapping[int, nn.Parameter], lrs: Sequence[float]
) -> Optimizer:
    """The optimizer member ``index`` would have on its own: the fused optimizer's class and
    settings with the member's ``lrs`` (one per param group), over the member's parameters
    (``params``: stacked parameter id → :func:`member_param`), holding the member's slice of
    every per-element state tensor (shared step counts as they are). For the optimizer
    diagnostics, which read the state (:mod:`optstudy.optim.effective_step`)."""
    groups = [
        {
            **{k: v for k, v in group.items() if k != "params"},
            "lr": lr,
            "params": [params[id(p)] for p in group["params"]],
        }
        for group, lr in zip(optimizer.param_groups, lrs, strict=True)
    ]
    view = type(optimizer)(groups)
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            if state:
                view.state[params[id(p)]] = {
                    key: value[index]
                    if isinstance(value, Tensor) and value.shape == p.shape
                    else value
                    for key, value in state.items()
                }
    return view
