"""Image classification as a LightningModule: cross-entropy, torchmetrics, config optimizers."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.trainer.states import TrainerFn
from torch import nn
from torch.optim import Optimizer
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from optstudy.module.layout import input_memory_format
from optstudy.optim import build_optimizer, build_scheduler
from optstudy.optim import schedule_free as sf
from optstudy.optim.effective_step import estimated_step_size

log = logging.getLogger(__name__)

STAGES = ("train", "val", "test")


def diverges(value: float, initial_loss: float, divergence_factor: float | None) -> bool:
    """Whether a training loss ``value`` means divergence: it is not finite, or above
    ``divergence_factor`` × the run's first loss (None: only a non-finite loss)."""
    limit = math.inf if divergence_factor is None else divergence_factor * initial_loss
    return not math.isfinite(value) or value > limit


class ImageClassifier(pl.LightningModule):
    """Train ``net`` with cross-entropy; log loss and accuracy per stage.

    ``optimizer`` is a factory taking parameter groups (a Hydra ``_partial_``), ``param_split``
    how the parameters split into its groups (an optimizer config's ``param_groups``, see
    :func:`optstudy.optim.param_groups`); ``scheduler`` a scheduler config for
    :func:`optstudy.optim.build_scheduler`. A Schedule-Free optimizer's evaluation weights are
    what validation, test and checkpoints see (:mod:`optstudy.optim.schedule_free`); an
    lr-free optimizer's estimated step size is logged as ``step_size_estimate``. A non-finite
    loss, or one above ``divergence_factor`` × the first loss, stops the run and marks it
    diverged.
    ``channels_last`` (None: on a GPU only) stores weights and batches NHWC; ``compile``
    compiles the network's forward with ``torch.compile``.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., Optimizer],
        scheduler: Mapping[str, Any],
        num_classes: int,
        decay_norm_and_bias: bool = True,
        divergence_factor: float | None = None,
        channels_last: bool | None = None,
        compile: bool = False,
        param_split: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.channels_last = channels_last
        self.compile = compile
        self.memory_format = torch.contiguous_format
        self.optimizer_factory = optimizer
        self.param_split = param_split
        self.optimizer: Optimizer | None = None  # built by configure_optimizers
        self.scheduler_cfg = scheduler
        self.decay_norm_and_bias = decay_norm_and_bias
        self.divergence_factor = divergence_factor
        # Keyed "<stage>_acc" / "<stage>_loss", the names they are logged under.
        self.metrics = nn.ModuleDict()
        for stage in STAGES:
            self.metrics[f"{stage}_acc"] = MulticlassAccuracy(num_classes, average="micro")
            self.metrics[f"{stage}_loss"] = MeanMetric()
        # Accumulated metric states go into checkpoints, so a run resumed mid-epoch reports
        # the same epoch metrics as one that was never interrupted.
        for metric in self.metrics.values():
            metric.persistent(True)
        self.initial_loss: float | None = None
        self.diverged = False
        self._logged_this_epoch: set[str] = set()

    def setup(self, stage: str) -> None:
        """Lay the weights out for the training device, and compile the network if asked."""
        self.memory_format = input_memory_format(
            self.channels_last, self.trainer.strategy.root_device
        )
        self.net.to(memory_format=self.memory_format)
        if self.compile and stage == "fit":
            self.net.compile()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        return self.net(x.contiguous(memory_format=self.memory_format))

    def _shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        acc, mean_loss = self.metrics[f"{stage}_acc"], self.metrics[f"{stage}_loss"]
        acc.update(logits.detach(), labels)
        mean_loss.update(loss.detach(), weight=len(labels))
        # Lightning computes and resets a logged metric object at the end of the epoch, over
        # all its updates: logging it at the first step of each epoch is enough, and spares
        # every other step the cost of self.log.
        if stage not in self._logged_this_epoch:
            self._logged_this_epoch.add(stage)
            prog_bar = stage == "val"
            self.log(f"{stage}_loss", mean_loss, on_step=False, on_epoch=True, prog_bar=prog_bar)
            self.log(f"{stage}_acc", acc, on_step=False, on_epoch=True, prog_bar=prog_bar)
        return loss

    def _schedule_free(self) -> Optimizer | None:
        return self.optimizer if sf.has_modes(self.optimizer) else None

    def _evaluation_weights(self) -> None:
        """Put a Schedule-Free optimizer's evaluation weights in the model (if it holds the
        trained ones), with batch-norm statistics recomputed at them."""
        optimizer = self._schedule_free()
        if optimizer is None or not sf.in_train_mode(optimizer):
            return
        optimizer.eval()
        batches = self.trainer.datamodule.statistics_batches(sf.BATCHNORM_BATCHES)
        sf.recompute_batchnorm(self.net, self, batches)

    def on_train_epoch_start(self) -> None:
        """A new epoch of training metrics (also after a resume in the middle of an epoch), on
        the weights the optimizer trains."""
        self._logged_this_epoch.discard("train")
        if optimizer := self._schedule_free():
            optimizer.train()

    def on_validation_epoch_start(self) -> None:
        """A new round of validation metrics, on the weights the optimizer evaluates."""
        self._logged_this_epoch.discard("val")
        self._evaluation_weights()

    def on_validation_end(self) -> None:
        """Back to the trained weights when training goes on."""
        optimizer = self._schedule_free()
        if optimizer is not None and self.trainer.state.fn == TrainerFn.FITTING:
            optimizer.train()

    def on_train_end(self) -> None:
        """Training ends on the weights the optimizer evaluates."""
        self._evaluation_weights()

    def on_test_epoch_start(self) -> None:
        """A new round of test metrics, on the weights the optimizer evaluates."""
        self._logged_this_epoch.discard("test")
        self._evaluation_weights()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        """One optimisation step; returns None (skipping the update) once the loss diverges
        (under DDP, where every process must step, the loss, whose gradients are then dropped)."""
        loss = self._shared_step(batch, "train")
        # Under DDP the mean over the processes, so that they all stop at the same step.
        value = self.trainer.strategy.reduce(loss.detach().clone(), reduce_op="mean").item()
        if self.initial_loss is None:
            self.initial_loss = value
        if diverges(value, self.initial_loss, self.divergence_factor):
            self.diverged = True
            self.trainer.should_stop = True
            if self.trainer.is_global_zero:
                log.warning(self._divergence(value))
            return loss if self.trainer.world_size > 1 else None
        # Only on the steps whose values reach the loggers (every trainer.log_every_n_steps), the
        # check Lightning's own LearningRateMonitor makes: self.log costs about as much as a
        # small model's step, and a value logged on other steps is never written.
        if self.trainer._logger_connector.should_update_logs:
            self.log("train_loss_step", loss, on_step=True, on_epoch=False, logger=True)
            estimate = estimated_step_size(self.optimizer)
            if estimate is not None:
                self.log("step_size_estimate", estimate, on_step=True, on_epoch=False)
        return loss

    def _divergence(self, loss: float) -> str:
        """Why the run stops at this step, for the log."""
        why = (
            f"loss {loss:.4g} is not finite"
            if not math.isfinite(loss)
            else f"loss {loss:.4g} > module.divergence_factor {self.divergence_factor} × the "
            f"first loss {self.initial_loss:.4g}"
        )
        return (
            f"diverged at step {self.trainer.global_step} (epoch {self.current_epoch}): {why}; "
            "training stops here and the run ends with status diverged"
        )

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        """Drop the gradients of a diverged step: the optimizer then leaves every weight as is."""
        if self.diverged:
            optimizer.zero_grad(set_to_none=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Accumulate validation loss and accuracy."""
        self._shared_step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Accumulate test loss and accuracy."""
        self._shared_step(batch, "test")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the divergence reference loss with the weights; a Schedule-Free optimizer's
        checkpoint holds its evaluation weights (and the trained ones to resume from)."""
        checkpoint["initial_loss"] = self.initial_loss
        if optimizer := self._schedule_free():
            sf.save_evaluation_weights(checkpoint, optimizer, self.named_parameters())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the divergence reference loss. A checkpoint saved at the end of an epoch
        (``last.ckpt``) holds that epoch's finished training metrics, which Lightning resets
        only after saving: load them reset, so the next epoch's numbers are its own. A
        Schedule-Free run resumes on its trained weights."""
        self.initial_loss = checkpoint.get("initial_loss")
        epoch = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {})
        current = epoch.get("current", {})
        if current.get("processed", 0) > current.get("completed", 0):
            for stage_metric in ("train_acc", "train_loss"):
                metric = self.metrics[stage_metric]
                metric.reset()
                checkpoint["state_dict"].update(
                    metric.state_dict(prefix=f"metrics.{stage_metric}.", keep_vars=False)
                )
        sf.restore_train_weights(checkpoint)

    def configure_optimizers(self) -> dict[str, Any]:
        """Bind the configured optimizer and scheduler to this model's parameters."""
        optimizer = build_optimizer(
            self.optimizer_factory, self.net, self.decay_norm_and_bias, self.param_split
        )
        self.optimizer = optimizer
        steps = {
            "step": int(self.trainer.estimated_stepping_batches),
            "epoch": self.trainer.max_epochs,
        }
        return {
            "optimizer": optimizer,
            "lr_scheduler": build_scheduler(self.scheduler_cfg, optimizer, steps),
        }
