"""A fused group as one LightningModule: every member's network as stacked weights, one
``vmap``-ed forward and backward pass and one optimizer step for all members per batch.

Each member keeps what its standalone run has: its initial weights, batch order, augmentation
and dropout masks (from its seed), its lr and schedule, its gradient clipping (by its own
gradient norm), its batch-norm statistics, its metrics, divergence and early stopping; a
member that stops is frozen (its weights no longer change) while the others go on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.optim import Optimizer

from optstudy.callbacks.history import Stopwatch
from optstudy.fused.member import Member
from optstudy.fused.metrics import MemberMean
from optstudy.fused.noise import DropoutSite, draw_masks
from optstudy.fused.optimizer import (
    build_fused_optimizer,
    clip_member_grad_norms,
    member_optimizer,
    member_param,
    stacked_param_groups,
    step_members,
)
from optstudy.fused.schedule import MemberSchedule
from optstudy.fused.stack import StackedNet
from optstudy.module import ImageClassifier, input_memory_format
from optstudy.module.classifier import STAGES
from optstudy.module.layout import per_member_layout
from optstudy.optim import optimizer_factory, param_groups

Batch = tuple[Tensor, Tensor]


class FusedClassifier(pl.LightningModule):
    """Train the members of a group at once.

    ``template``: the standalone module of the first member (its network, with
    :class:`~optstudy.fused.noise.MaskedDropout` layers, is the function every member's
    weights run through; its settings are the group's); ``nets``: every member's network with
    its initial weights; ``sites``: the template's dropout layers; ``augment``: the training
    batch augmentation (each member draws it from its own stream).
    """

    def __init__(
        self,
        template: ImageClassifier,
        nets: Sequence[nn.Module],
        members: list[Member],
        sites: Sequence[DropoutSite],
        augment: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__()
        # Not a sub-module: functional_call puts the stacked weights in its place, so its own
        # tensors stay where they are and out of the state dict.
        object.__setattr__(self, "template", template)
        self.net = StackedNet(nets)
        self.members = members
        self.sites = list(sites)
        self.augment = augment
        self.metrics = nn.ModuleDict()
        for stage in STAGES:
            for kind in ("acc", "loss"):
                metric = MemberMean(len(members))
                metric.persistent(True)  # mid-epoch checkpoints keep the epoch's running sums
                self.metrics[f"{stage}_{kind}"] = metric
        self.clock = Stopwatch()
        self.memory_format = torch.contiguous_format
        self.step_losses: list[float] = []  # each member's training loss of the latest step
        self.results: dict[str, list[dict[str, float]]] = {}  # "val"/"test" → per member
        self._restored: dict[str, Any] | None = None
        self._forward_batched = self._fused(batched=True)
        self._forward_shared = self._fused(batched=False)

    # -- the fused forward pass ---------------------------------------------------------------

    def _member_forward(
        self, weights: dict, shared: dict, masks: dict, images: Tensor, labels: Tensor
    ) -> tuple[Tensor, Tensor]:
        """One member's logits and mean cross-entropy (``vmap`` runs it for every member)."""
        logits = functional_call(self.template.net, (weights, shared, masks), (images,))
        return logits, F.cross_entropy(logits, labels)

    def _fused(self, batched: bool) -> Callable[..., tuple[Tensor, Tensor]]:
        """Every member's forward pass in one call: on a batch of each member (``batched``,
        member × batch × …) or on one batch they all see (validation, test). Nothing inside
        draws random numbers (``randomness="error"``)."""
        data = 0 if batched else None
        return vmap(self._member_forward, in_dims=(0, None, 0, data, data), randomness="error")

    def _run(self, batched: bool, images: Tensor, labels: Tensor, masks: dict) -> tuple:
        forward = self._forward_batched if batched else self._forward_shared
        return forward(self.net.per_member(), self.net.shared(), masks, images, labels)

    def setup(self, stage: str) -> None:
        """Lay weights out for the device, and compile the fused forward if asked."""
        self.memory_format = input_memory_format(
            self.template.channels_last, self.trainer.strategy.root_device
        )
        for tensor in self.net.per_member().values():
            tensor.data = per_member_layout(tensor.data, self.memory_format)
        for tensor in self.net.shared().values():
            if tensor.ndim == 4:
                tensor.data = tensor.data.contiguous(memory_format=self.memory_format)
        if self.template.compile and stage == "fit":
            self._forward_batched = torch.compile(self._fused(batched=True))
            self._forward_shared = torch.compile(self._fused(batched=False))

    def train(self, mode: bool = True) -> FusedClassifier:
        """Set training mode, the template network's too."""
        super().train(mode)
        self.template.train(mode)
        return self

    # -- training -----------------------------------------------------------------------------

    def _member_draws(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Augment each member's batch and draw its dropout masks, from its own stream."""
        if self.augment is None and not self.sites:
            return images, {}
        batches, masks = [], []
        for member, batch in zip(self.members, images, strict=True):
            with member.rng.active(images.device):
                batches.append(self.augment(batch) if self.augment is not None else batch)
                masks.append(draw_masks(self.sites, len(batch), images.device))
        stacked = {
            site.mask_name: torch.stack([m[number] for m in masks])
            for number, site in enumerate(self.sites)
        }
        return torch.stack(batches), stacked

    def _update_metrics(self, stage: str, logits: Tensor, labels: Tensor, losses: Tensor) -> None:
        correct = (logits.argmax(-1) == labels).sum(-1)
        count = labels.shape[-1]
        self.metrics[f"{stage}_acc"].update(correct, count, values_are_sums=True)
        self.metrics[f"{stage}_loss"].update(losses, count)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        """One fused step: each member's loss, its divergence check; the sum of the losses of
        the members still training (None, skipping the step, once none is)."""
        images, labels = batch
        images, masks = self._member_draws(per_member_layout(images, self.memory_format))
        logits, losses = self._run(True, images, labels, masks)
        self._update_metrics("train", logits.detach(), labels, losses.detach())
        self.step_losses = losses.detach().float().tolist()
        elapsed = self.clock.elapsed()
        for member, value in zip(self.members, self.step_losses, strict=True):
            if member.training:
                member.check_loss(value, elapsed)
        training = self.training_mask()
        if not training.any():
            self.trainer.should_stop = True
            return None
        return torch.where(training, losses, torch.zeros_like(losses)).sum()

    def training_mask(self) -> Tensor:
        """Which members still train, on the module's device."""
        return torch.tensor([m.training for m in self.members], device=self.device)

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        """Zero the gradients of members that no longer train."""
        frozen = [m.index for m in self.members if not m.training]
        if frozen:
            for param in self.net.parameters():
                if param.grad is not None:
                    param.grad[frozen] = 0

    def configure_gradient_clipping(
        self,
        optimizer: Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """``trainer.gradient_clip_val`` for each member on its own: by the norm of its own
        gradient (Lightning's default, ``norm``) or elementwise (``value``)."""
        if not gradient_clip_val:
            return
        params = [p for p in self.net.parameters() if p.grad is not None]
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        else:
            clip_member_grad_norms(params, gradient_clip_val)

    def member_lrs(self) -> Tensor:
        """Member × param group: each member's lr for this step (0 for a frozen member)."""
        rows = []
        for member in self.members:
            assert member.schedule is not None
            lrs = member.schedule.lrs()
            rows.append(lrs if member.training else [0.0] * len(lrs))
        return torch.tensor(rows, device=self.device, dtype=torch.float64)

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: Optimizer,
        optimizer_closure: Callable[[], Any] | None = None,
    ) -> None:
        """The fused step (see :func:`optstudy.fused.optimizer.step_members`), then each
        training member's per-step schedule."""
        training = [m for m in self.members if m.training]
        step_members(optimizer, self.member_lrs, optimizer_closure)
        for member in training:
            # A step that diverged counts, as Lightning counts a standalone run's skipped step.
            member.steps += 1
            if member.training:
                assert member.schedule is not None
                member.schedule.step("step", {})

    def configure_optimizers(self) -> Optimizer:
        """The fused optimizer over the stacked weights (lr = 1), and each member's schedule."""
        template = self.template
        groups = param_groups(template.net, template.decay_norm_and_bias, template.param_split)
        names = {id(p): name for name, p in template.net.named_parameters()}
        stacked = stacked_param_groups(groups, names, dict(self.net.named_parameters()))
        optimizer = build_fused_optimizer(template.optimizer_factory, stacked)
        steps = {
            "step": int(self.trainer.estimated_stepping_batches),
            "epoch": self.trainer.max_epochs,
        }
        options = [{k: v for k, v in group.items() if k != "params"} for group in groups]
        for member in self.members:
            factory = optimizer_factory(member.run.cfg.optimizer)
            member.schedule = MemberSchedule(factory, member.run.cfg.scheduler, options, steps)
        if self._restored is not None:
            for member, state in zip(self.members, self._restored["members"], strict=True):
                member.load_state_dict(state)
            self._restored = None
        return optimizer

    def on_fit_start(self) -> None:
        """Start the group's clock."""
        self.clock.start()

    # -- validation and test ------------------------------------------------------------------

    def _evaluate(self, batch: Batch, stage: str) -> None:
        images, labels = batch
        if images.ndim == 4:
            images = images.contiguous(memory_format=self.memory_format)
        logits, losses = self._run(False, images, labels, {})
        self._update_metrics(stage, logits, labels, losses)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Accumulate every member's validation loss and accuracy."""
        self._evaluate(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        """Accumulate every member's test loss and accuracy."""
        self._evaluate(batch, "test")

    def epoch_metrics(self, stage: str) -> list[dict[str, float]]:
        """Each member's ``<stage>_loss`` and ``<stage>_acc`` over the stage's batches so far;
        the metrics start again."""
        values = {}
        for kind in ("loss", "acc"):
            metric = self.metrics[f"{stage}_{kind}"]
            # torchmetrics squeezes a one-member result to a scalar: one value per member again
            values[f"{stage}_{kind}"] = metric.compute().reshape(-1).tolist()
            metric.reset()
        return [
            {key: column[number] for key, column in values.items()}
            for number in range(len(self.members))
        ]

    def on_validation_epoch_end(self) -> None:
        """Keep each member's validation metrics for the epoch's end."""
        self.results["val"] = self.epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        """Keep each member's test metrics."""
        self.results["test"] = self.epoch_metrics("test")

    # -- one member as a standalone model -----------------------------------------------------

    def _net_prefix(self) -> str:
        """The name the standalone module gives its network (``net``)."""
        return next(n for n, m in self.template.named_children() if m is self.template.net)

    def member_params(self, index: int) -> dict[str, nn.Parameter]:
        """Member ``index``'s trainable parameters (views with their gradients, see
        :func:`~optstudy.fused.optimizer.member_param`), named as in its standalone module."""
        prefix = self._net_prefix()
        return {
            f"{prefix}.{name}": member_param(stacked, index)
            for name, stacked in self.net.named_parameters()
        }

    def member_optimizer(
        self, index: int, params: dict[str, nn.Parameter], lrs: Sequence[float]
    ) -> Optimizer:
        """The optimizer member ``index`` would have on its own, over ``params`` (from
        :meth:`member_params`), with ``lrs`` (see
        :func:`~optstudy.fused.optimizer.member_optimizer`)."""
        prefix = self._net_prefix()
        stacked = dict(self.net.named_parameters())
        by_id = {id(stacked[name.removeprefix(f"{prefix}.")]): p for name, p in params.items()}
        return member_optimizer(self.trainer.optimizers[0], index, by_id, lrs)

    def member_state_dict(self, index: int) -> dict[str, Tensor]:
        """Member ``index`` as its standalone module's state dict (the network's weights and
        buffers under the module's names, and fresh metric states), on the CPU: what its
        checkpoints hold, loadable into the standalone model."""
        state = self.template.state_dict()
        prefix = self._net_prefix()
        for name, tensor in self.net.member(index).items():
            state[f"{prefix}.{name}"] = tensor.detach().cpu().contiguous().clone()
        return state

    # -- checkpoints --------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep every member's state and the group's clock with the weights."""
        checkpoint["fused"] = {
            "members": [member.state_dict() for member in self.members],
            "elapsed": self.clock.elapsed(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the clock; the members' states once their schedules exist
        (:meth:`configure_optimizers`)."""
        self._restored = checkpoint["fused"]
        self.clock.resume(checkpoint["fused"]["elapsed"])
