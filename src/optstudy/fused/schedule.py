"""A member's own lr schedule: its configured torch scheduler, driving a stand-in optimizer.

The fused optimizer steps with lr = 1 (:mod:`optstudy.fused.optimizer`); each member's lr
comes from its own scheduler, built from its own config exactly as a standalone run builds it,
on a stand-in optimizer of the member's class, settings and lr over one placeholder tensor per
param group. Whatever the scheduler sets there is the member's lr: every scheduler of
``conf/scheduler/`` works unchanged, ``plateau`` included (stepped with the member's own
validation loss).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from omegaconf import DictConfig
from torch.optim import Optimizer

from optstudy.optim import build_scheduler


class MemberSchedule:
    """The lrs of one member, per param group, as its scheduler sets them.

    ``factory``: the member's optimizer factory (with its lr); ``groups``: the options of each
    param group (without parameters); ``steps``: scheduler steps of the run per interval."""

    def __init__(
        self,
        factory: Callable[..., Optimizer],
        scheduler: DictConfig | Mapping[str, Any],
        groups: Sequence[Mapping[str, Any]],
        steps: Mapping[str, int],
    ) -> None:
        placeholders = [{**g, "params": [torch.zeros(1, requires_grad=True)]} for g in groups]
        self.optimizer = factory(placeholders)
        built = build_scheduler(scheduler, self.optimizer, steps)
        self.scheduler = built["scheduler"]
        self.interval: str = built["interval"]
        self.monitor: str | None = built.get("monitor")

    def lrs(self) -> list[float]:
        """The lr of each param group for the next optimizer step."""
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def step(self, interval: str, metrics: Mapping[str, float]) -> None:
        """Step the scheduler if it steps at this ``interval`` ("step" after each optimizer
        step, "epoch" after each epoch), a plateau scheduler with its monitored metric."""
        if interval != self.interval:
            return
        # The stand-in's step moves nothing (its placeholders have no gradient); it tells the
        # scheduler that an optimizer step came first, as in a standalone run.
        self.optimizer.step()
        if self.monitor:
            self.scheduler.step(metrics[self.monitor])
        else:
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        """The stand-in optimizer's and the scheduler's states, for checkpoints."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the states of a checkpoint."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
