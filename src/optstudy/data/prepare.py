"""Decode a data set into the cache ahead of training (e.g. as a DVC stage):

    python -m optstudy.data.prepare data=cifar10 data.root=/path/to/folder

takes the same overrides as ``train.py`` (composing the same ``conf/``), decodes and verifies
the data set once, writes ``<paths.cache_dir>/<name>-<hash>.pt`` and prints a summary.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import DictConfig

from optstudy import resolvers
from optstudy.data.cache import load_prepared, prepare
from optstudy.errors import ConfigError, find_user_error


def compose_config(overrides: list[str]) -> DictConfig:
    """Compose ``conf/train.yaml`` of the project folder ($OPTSTUDY_ROOT, else the current one)."""
    root = Path(os.environ.setdefault("OPTSTUDY_ROOT", str(Path.cwd()))).resolve()
    if not (root / "conf" / "train.yaml").is_file():
        raise ConfigError(
            f"no conf/train.yaml in {root}: run from the project folder or set OPTSTUDY_ROOT"
        )
    resolvers.register()
    with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


def summary(path: Path) -> str:
    """What the cache file at ``path`` holds, in a few lines."""
    splits = load_prepared(path)
    shape = "×".join(map(str, splits.train_images.shape[1:]))
    test = len(splits.test_labels) or "no"
    return (
        f"{path}\n{len(splits.train_labels)} training and {test} test images of {shape} "
        f"(C×H×W), {len(splits.classes)} classes (data.num_classes={len(splits.classes)}): "
        f"{', '.join(splits.classes)}"
    )


def run_cli(action: Callable[[], None]) -> int:
    """Run a data command; expected errors print one ``error:`` line and give exit code 2."""
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(message)s")
    try:
        action()
    except Exception as exc:
        error = find_user_error(exc) or (exc if isinstance(exc, HydraException) else None)
        if error is None or os.environ.get("OPTSTUDY_DEBUG"):
            raise
        print(f"error: {str(error).strip()}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """Prepare the data set of a composed config (the train.py overrides on the command line)."""

    def action() -> None:
        cfg = compose_config(sys.argv[1:] if argv is None else argv)
        print(summary(prepare(instantiate(cfg.data.source), Path(cfg.data.cache_dir))))

    return run_cli(action)


if __name__ == "__main__":
    sys.exit(main())
