"""Schedule-Free optimizers (Defazio et al., 2024; package ``schedulefree``) in a run.

They train one sequence of weights (y) and evaluate another (x, an average): ``optimizer.eval()``
puts x into the model's parameters, ``optimizer.train()`` puts y back. A run evaluates and
saves x, trains y, and recomputes batch-norm statistics at x before evaluating, as the
package's documentation says (the running statistics gathered in training are y's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ConstantLR, LRScheduler
from torch.optim.lr_scheduler import ReduceLROnPlateau as Plateau

# Training batches whose batch statistics replace the running ones at x (the documentation's
# number: "for batch in itertools.islice(train_loader, 50)"); always the same batches, so the
# statistics depend on x alone.
BATCHNORM_BATCHES = 50
# The checkpoint key holding the trained weights y, next to the evaluated x in "state_dict".
TRAIN_WEIGHTS = "schedule_free_train_weights"


def has_modes(optimizer: Optimizer | None) -> bool:
    """Whether ``optimizer`` keeps train and eval weights (``train()`` / ``eval()``), as the
    Schedule-Free optimizers do."""
    return callable(getattr(optimizer, "train", None)) and callable(
        getattr(optimizer, "eval", None)
    )


def in_train_mode(optimizer: Optimizer) -> bool:
    """Whether the parameters hold the trained weights y (the package's own mode flag)."""
    return bool(optimizer.param_groups[0]["train_mode"])


def is_constant(scheduler: LRScheduler | Plateau) -> bool:
    """Whether ``scheduler`` leaves the lr as it is (``scheduler=constant``)."""
    return isinstance(scheduler, ConstantLR) and (
        scheduler.factor == 1.0 or scheduler.total_iters == 0
    )


def recompute_batchnorm(
    model: nn.Module, forward: Callable[[Tensor], Any], batches: Iterable[tuple[Tensor, Tensor]]
) -> None:
    """Replace the running statistics of every batch-norm layer of ``model`` by the average of
    the batch statistics over ``batches`` (PreciseBN), at the weights the model holds now.

    Only the batch-norm layers train meanwhile (no dropout, no other state changes);
    ``forward`` is the model's forward (with its input layout)."""
    norms = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    if not norms:
        return
    saved = [(m.training, m.momentum) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
        m.train()
    try:
        with torch.no_grad():
            for images, _ in batches:
                forward(images)
    finally:
        for m, (training, momentum) in zip(norms, saved, strict=True):
            m.train(training)
            m.momentum = momentum


def evaluation_weights(
    optimizer: Optimizer, named: Iterable[tuple[str, nn.Parameter]]
) -> dict[str, Tensor]:
    """Copies of the weights x that ``optimizer.eval()`` would put in the parameters, taken
    without changing them: the trained weights y are restored bit for bit afterwards."""
    named = list(named)
    trained = [p.detach().clone() for _, p in named]
    optimizer.eval()
    evaluated = {name: p.detach().clone() for name, p in named}
    optimizer.train()
    with torch.no_grad():
        for (_, p), value in zip(named, trained, strict=True):
            p.copy_(value)
    return evaluated


def save_evaluation_weights(
    checkpoint: dict[str, Any], optimizer: Optimizer, named: Iterable[tuple[str, nn.Parameter]]
) -> None:
    """Make a checkpoint taken in train mode hold x under ``state_dict`` (what evaluating the
    checkpoint must use) and y under :data:`TRAIN_WEIGHTS` (what resuming needs)."""
    if not in_train_mode(optimizer):
        return  # the parameters hold x already, and the optimizer state says so
    named = list(named)
    checkpoint[TRAIN_WEIGHTS] = {name: p.detach().clone() for name, p in named}
    checkpoint["state_dict"].update(evaluation_weights(optimizer, named))


def restore_train_weights(checkpoint: Mapping[str, Any]) -> None:
    """Before a checkpoint is loaded: put the trained weights y back under ``state_dict``, so
    the model resumes with the weights its optimizer state (in train mode) belongs to."""
    trained = checkpoint.get(TRAIN_WEIGHTS)
    if trained:
        checkpoint["state_dict"].update(trained)
