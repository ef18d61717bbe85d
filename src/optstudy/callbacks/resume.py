"""Resume a run exactly: RNG states in every checkpoint, and only checkpoints of the same run."""

from __future__ import annotations

import pickle
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import OnExceptionCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from optstudy.artifacts import FUSED_CHECKPOINT_KEY
from optstudy.callbacks.history import RECORDER_KEY
from optstudy.errors import ConfigError


class InterruptCheckpoint(OnExceptionCheckpoint):
    """Lightning's :class:`OnExceptionCheckpoint`, but only for SIGINT/SIGTERM: a run that
    crashed is not resumed from the state it crashed in."""

    def on_exception(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        """Save the checkpoint when the exception is an interruption."""
        exception = args[-1] if args else kwargs.get("exception")
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            super().on_exception(trainer, *args, **kwargs)


class ResumableRun(pl.Callback):
    """Save the RNG states and the run's identity (its result-relevant config) in every
    checkpoint; restore the RNG states on resume."""

    def __init__(self, identity: dict[str, Any]) -> None:
        self.identity = identity

    @property
    def state_key(self) -> str:
        """One fixed key in the checkpoint's callback states."""
        return "ResumableRun"

    def state_dict(self) -> dict[str, Any]:
        """RNG states of Python, NumPy and torch, and the run identity."""
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        return {
            "identity": self.identity,
            "python_rng": random.getstate(),
            "numpy_rng": [kind, torch.from_numpy(keys.copy()), pos, has_gauss, gauss],
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the RNG states, so a resumed run draws what the uninterrupted one would."""
        version, internal, gauss_next = state["python_rng"]
        random.setstate((version, tuple(internal), gauss_next))
        kind, keys, pos, has_gauss, gauss = state["numpy_rng"]
        np.random.set_state((kind, keys.numpy(), pos, has_gauss, gauss))
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])


def resume_from(
    candidates: Sequence[Path], identity: dict[str, Any], max_epochs: int
) -> Path | None:
    """The first existing checkpoint of ``candidates`` (an interrupted run's, then ``last.ckpt``),
    if any: an earlier attempt of this same run to resume.

    Raises :class:`ConfigError` when the checkpoint is not safe to load (arbitrary pickled
    objects), belongs to a run with another config, or has trained more than ``max_epochs``
    epochs (the run would be recorded with fewer epochs than it trained).
    """
    path = next((Path(p) for p in candidates if Path(p).exists()), None)
    if path is None:
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise ConfigError(
            f"refusing to resume from {path}: it is not a plain tensor checkpoint "
            f"({str(exc).splitlines()[0]}); delete it or use another run directory"
        ) from exc
    if FUSED_CHECKPOINT_KEY in checkpoint:
        raise ConfigError(
            f"{path} holds the weights of a member of a fused group (launcher.mode=vmap), not "
            "a run to resume: rerun the group's command, or delete it to train this run alone"
        )
    states = checkpoint.get("callbacks", {})
    if states.get("ResumableRun", {}).get("identity") != identity:
        raise ConfigError(
            f"{path} belongs to a run with another config; use a new run directory "
            "(hydra.run.dir=...) or delete that checkpoint"
        )
    trained = len(states.get(RECORDER_KEY, {}).get("rows", []))
    if trained > max_epochs:
        raise ConfigError(
            f"{path} belongs to a run that has trained {trained} epochs, more than "
            f"trainer.max_epochs={max_epochs}; set trainer.max_epochs>={trained} to continue "
            "it, or use a new run directory (hydra.run.dir=...)"
        )
    return path
