"""The known third-party console noise, silenced at its source, one filter per message.

Every filter matches one message of one library that says nothing true or useful about a run
of this project; anything else (a new warning, another message of the same library) still
reaches the user. :func:`install` is called once by each entry point (``train.py`` and
:func:`optstudy.cli.command`); it is idempotent.

Imports neither torch nor Lightning: the filters wait on the loggers by name.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

# Python warnings (message regex matched at the start, category), each with why it is safe.
WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    # torch deprecates LeafSpec and Lightning's own _pytree helper still builds it, at every
    # fit and test: nothing the user can change (Lightning's to fix).
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
    # A rerun or resume in the same run directory finds its own checkpoints there: run.build
    # (callbacks.resume.resume_from) has already refused those of a run with another config.
    (r"Checkpoint directory .* exists and is not empty", UserWarning),
    # The batches resume exactly mid-epoch without Lightning's state_dict protocol: they
    # start from the fit loop's count of completed batches (data.batches.TensorBatches; the
    # resume tests compare with an uninterrupted run).
    (r"You're resuming from a checkpoint that ended before the epoch ended", UserWarning),
    # ImageClassifier returns None on purpose once the loss has diverged (its update is
    # skipped); the module logs why the run stops instead.
    (r"`training_step` returned `None`", UserWarning),
)


@dataclass(frozen=True)
class DropMessage(logging.Filter):
    """A logging filter dropping the records of its logger whose message template (the
    format string before arguments) starts with ``prefix``."""

    prefix: str

    def filter(self, record: logging.LogRecord) -> bool:
        """False (drop) for the one known message, True for everything else."""
        return not str(record.msg).startswith(self.prefix)


# Logger name → the messages dropped from it, each with why it is safe.
LOG_MESSAGES: dict[str, tuple[str, ...]] = {
    "pytorch_lightning.utilities.rank_zero": (
        # Advertisements for Lightning's cloud products, on every run.
        "💡 Tip:",
        # Always false on the machines this project targets (no TPU support here).
        "TPU available: False",
        # Lightning's internal step before building the schedule; no action for the user.
        "Loading `train_dataloader` to estimate number of stepping batches.",
    ),
}


def install() -> None:
    """Install the warning and logging filters above (idempotent: Python de-duplicates equal
    warning filters, and each logging filter is added once)."""
    for message, category in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, prefixes in LOG_MESSAGES.items():
        logger = logging.getLogger(name)
        for prefix in prefixes:
            logger.addFilter(DropMessage(prefix))  # equal filters compare equal: added once


def drop_removed_wandb_arguments(init_arguments: dict[str, Any]) -> None:
    """Remove ``anonymous`` from ``init_arguments`` (Lightning's ``WandbLogger._wandb_init``,
    what it passes to ``wandb.init``): Lightning always passes it (None unless asked), and
    wandb ≥ 0.31, where it has no effect, then warns "The anonymous setting has no effect" on
    every run. Dropping a None changes nothing else."""
    if "anonymous" in init_arguments and init_arguments["anonymous"] is None:
        del init_arguments["anonymous"]
