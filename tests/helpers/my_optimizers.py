"""Optimizers of a user's own, outside the package: what ``optimizer=custom`` runs."""

import torch
from torch.optim import Optimizer


class SignSGD(Optimizer):
    """signSGD with momentum (Bernstein et al., 2018): m ← β·m + (1 − β)·g, θ ← θ − lr·sign(m)."""

    def __init__(self, params, lr: float = 1e-3, beta: float = 0.9) -> None:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        super().__init__(params, {"lr": lr, "beta": beta})

    @torch.no_grad()
    def step(self, closure=None):
        """Evaluate the closure (Lightning computes the loss in it), then update every parameter
        with a gradient; return the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    momentum = self.state[p].setdefault("momentum", torch.zeros_like(p))
                    momentum.lerp_(p.grad, 1 - group["beta"])
                    p.add_(momentum.sign(), alpha=-group["lr"])
        return loss


class ForgetsTheClosure(SignSGD):
    """A step that never calls the closure it is given."""

    def step(self, closure=None):
        """Update without evaluating ``closure``."""
        return super().step()


class NotAnOptimizer:
    """A class that is no torch.optim.Optimizer."""

    def __init__(self, params, lr: float = 0.1) -> None:
        self.params = params
