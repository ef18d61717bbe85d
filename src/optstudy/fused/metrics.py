"""Per-member epoch metrics of a fused group: one torchmetrics metric, one value per member."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class MemberMean(Metric):
    """A weighted mean per member: ``update(values, weight)`` adds ``values × weight`` (one
    value per member) and ``weight``; ``compute()`` gives one mean per member.

    The numbers are those of a standalone run's metrics: the loss as torchmetrics'
    ``MeanMetric`` weighted by the batch size (``update(losses, n)``), the accuracy as
    ``MulticlassAccuracy(average="micro")``, correct predictions over examples
    (``update(correct_counts, n, values_are_sums=True)``).
    """

    full_state_update = False

    def __init__(self, members: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.zeros(members), dist_reduce_fx="sum")
        self.add_state("weight", torch.zeros(members), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor, weight: float, values_are_sums: bool = False) -> None:
        """Add one batch: ``values`` (one per member) weighted by ``weight`` examples; with
        ``values_are_sums`` the values are already sums over those examples."""
        values = values.detach().to(self.total.dtype)
        self.total += values if values_are_sums else values * weight
        self.weight += weight

    def compute(self) -> torch.Tensor:
        """The mean of each member."""
        return self.total / self.weight
