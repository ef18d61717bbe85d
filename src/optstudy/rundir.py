"""The run directory must be writable before Hydra creates it and before anything is trained."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from optstudy.errors import ConfigError


def check_writable(directory: Path) -> None:
    """Raise :class:`ConfigError` unless ``directory`` exists or can be made, and takes files."""
    directory = Path(directory)
    existing = next((p for p in (directory, *directory.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise ConfigError(
            f"cannot create the run directory {directory}: {existing} is not a folder"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test-{os.getpid()}"  # DDP processes check at once
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"cannot write the run directory {directory}: {exc.strerror or exc}"
        ) from exc


class RunDirCheck(Callback):
    """Hydra callback: stop with one line (exit 2) when the run or sweep directory is unusable."""

    def _check(self, directory: str) -> None:
        from optstudy.cli import guarded

        guarded(lambda: check_writable(Path(directory)))

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Before a single run."""
        self._check(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Before a sweep."""
        self._check(config.hydra.sweep.dir)
