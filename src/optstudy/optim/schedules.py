"""Learning-rate schedules that torch.optim.lr_scheduler does not provide directly."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import ExponentialLR, LambdaLR


def exp_formula(optimizer: Optimizer, k: float) -> ExponentialLR:
    """lr = lr0 · exp(−k · t), stepped once per interval (E3: lr0 = 0.1, k = 0.1, per epoch)."""
    return ExponentialLR(optimizer, gamma=math.exp(-k))


def warmup_cosine(
    optimizer: Optimizer, total_steps: int, warmup_fraction: float, min_lr_ratio: float
) -> LambdaLR:
    """Linear warm-up from 0 over ``warmup_fraction`` of training, then cosine decay to
    ``min_lr_ratio`` × lr0 at ``total_steps``."""
    warmup = max(1, round(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
