"""The optimizers the configs build follow the update rules SEEDS.md documents: reference
implementations written from those rules, stepped side by side with the torch.optim objects
that conf/optimizer/*.yaml and ``build_optimizer`` make, on the same gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from optstudy.cli import compose
from optstudy.optim import optimizer_factory, optimizer_from_config

STEPS = 40


class AdaGrad:
    """SEEDS E4: G ← G + g², θ ← θ − η·g / √(G + ε).

    torch (and the config's comment) put ε outside the root: θ ← θ − η·g / (√G + ε). With the
    config's ε = 1e-10 the two agree to ~ε/√G relative, unless gradients are as small as √ε
    (see test_adagrad_epsilon_placement_matters_only_for_tiny_gradients)."""

    def __init__(self, lr: float, eps: float, initial: float) -> None:
        self.lr, self.eps, self.G = lr, eps, initial

    def step(self, theta: np.ndarray, g: np.ndarray) -> np.ndarray:
        self.G = self.G + g**2
        return theta - self.lr * g / np.sqrt(self.G + self.eps)


class RMSprop:
    """SEEDS names RMSprop without writing its rule; this is Hinton's (2012): E5's second-moment
    average without momentum or bias correction, v ← α·v + (1−α)·g², θ ← θ − η·g / (√v + ε)
    (ε outside the root, as in torch)."""

    def __init__(self, lr: float, alpha: float, eps: float) -> None:
        self.lr, self.alpha, self.eps, self.v = lr, alpha, eps, 0.0

    def step(self, theta: np.ndarray, g: np.ndarray) -> np.ndarray:
        self.v = self.alpha * self.v + (1 - self.alpha) * g**2
        return theta - self.lr * g / (np.sqrt(self.v) + self.eps)


class Adam:
    """SEEDS E5: m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²; m̂ = m/(1−β1ᵗ), v̂ = v/(1−β2ᵗ);
    θ ← θ − η·m̂/(√v̂ + ε), ε outside the root as in torch. ``decoupled_decay`` λ adds AdamW's
    θ ← θ − η·λ·θ (Loshchilov & Hutter; SEEDS E5 names it "decoupled weight decay")."""

    def __init__(self, lr: float, betas: list[float], eps: float, decoupled_decay: float = 0.0):
        self.lr, (self.b1, self.b2), self.eps = lr, betas, eps
        self.decay, self.m, self.v, self.t = decoupled_decay, 0.0, 0.0, 0

    def step(self, theta: np.ndarray, g: np.ndarray) -> np.ndarray:
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.b2 * self.v + (1 - self.b2) * g**2
        m_hat, v_hat = self.m / (1 - self.b1**self.t), self.v / (1 - self.b2**self.t)
        theta = theta - self.lr * self.decay * theta
        return theta - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


def reference(name: str, cfg) -> AdaGrad | RMSprop | Adam:
    """The reference of ``optimizer=<name>`` with the config's values."""
    if name == "adagrad":
        return AdaGrad(cfg.lr, cfg.eps, cfg.initial_accumulator_value)
    if name == "rmsprop":
        return RMSprop(cfg.lr, cfg.alpha, cfg.eps)
    return Adam(cfg.lr, list(cfg.betas), cfg.eps, cfg.weight_decay if name == "adamw" else 0.0)


# (rtol, atol) of the comparison: float64 rounding, except where AdaGrad's ε sits: the gradients
# below have |g| ≥ 1e-3, so √G ≥ 1e-3 and the placements differ by at most ε/√G = 1e-7 of a
# step (≤ lr = 0.01), i.e. ≤ 1e-9 a step and ≤ 4e-8 over the 40 steps.
TOLERANCE = {"adagrad": (1e-7, 4e-8), "rmsprop": (1e-12, 1e-14)}
TOLERANCE |= {"adam": TOLERANCE["rmsprop"], "adamw": TOLERANCE["rmsprop"]}


def _gradients(shapes: list[torch.Size], steps: int) -> list[list[torch.Tensor]]:
    """Seeded float64 gradients whose scale drifts over steps (from ~1 down to ~1e-2, then a
    burst), with every |g| ≥ 1e-3."""
    rng = torch.Generator().manual_seed(0)
    scales = [1.0 / (1 + t) if t < steps - 5 else 3.0 for t in range(steps)]
    out = []
    for scale in scales:
        step = []
        for shape in shapes:
            g = torch.randn(shape, generator=rng, dtype=torch.float64) * scale
            step.append(torch.where(g.abs() < 1e-3, torch.full_like(g, 1e-3), g))
        out.append(step)
    return out


@pytest.mark.parametrize("name", ["adagrad", "rmsprop", "adam", "adamw"])
def test_config_optimizer_follows_the_documented_rule(name):
    cfg, _ = compose([f"optimizer={name}"])
    # The reference rules have no coupled L2, momentum, centering, lr decay or AMSGrad.
    assert cfg.optimizer.get("weight_decay", 0.0) == 0.0 or name == "adamw"
    assert not cfg.optimizer.get("momentum") and not cfg.optimizer.get("centered")
    assert not cfg.optimizer.get("lr_decay") and not cfg.optimizer.get("amsgrad")
    model = nn.Sequential(nn.Linear(5, 3), nn.Linear(3, 2)).double()
    optimizer = optimizer_from_config(cfg.optimizer, model, cfg.module.decay_norm_and_bias)
    assert type(optimizer).__name__.lower() == name
    params = list(model.parameters())
    start = [p.detach().numpy().copy() for p in params]
    theta, refs = list(start), [reference(name, cfg.optimizer) for _ in params]
    rtol, atol = TOLERANCE[name]
    for grads in _gradients([p.shape for p in params], STEPS):
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
        theta = [r.step(t, g.numpy()) for r, t, g in zip(refs, theta, grads, strict=True)]
        for p, t in zip(params, theta, strict=True):
            np.testing.assert_allclose(p.detach().numpy(), t, rtol=rtol, atol=atol)
    # The parameters travelled far beyond the tolerance: the agreement is not trivial.
    assert min(np.abs(t - s).max() for t, s in zip(theta, start, strict=True)) > 1e-3


def test_adagrad_epsilon_placement_matters_only_for_tiny_gradients():
    """SEEDS's √(G + ε) and torch's √G + ε: the same step for ordinary gradients, but for a
    gradient of size √ε SEEDS's step is 1/√2 of torch's."""
    cfg, _ = compose(["optimizer=adagrad", "optimizer.eps=1e-8"])
    for g, ratio in ((0.5, 1.0), (1e-4, 2**-0.5)):
        param = nn.Parameter(torch.zeros(1, dtype=torch.float64))
        optimizer = optimizer_factory(cfg.optimizer)([param])
        param.grad = torch.full_like(param, g)
        optimizer.step()
        seeds = AdaGrad(cfg.optimizer.lr, cfg.optimizer.eps, 0.0).step(np.zeros(1), np.full(1, g))
        assert seeds[0] / param.item() == pytest.approx(ratio, rel=1e-3)
