"""Decode a data set into the cache ahead of training (e.g. as a DVC stage):

    python -m optstudy.data.prepare data=cifar10 data.root=/path/to/folder

takes the same overrides as ``train.py`` (composing the same ``conf/``), decodes and verifies
the data set once, writes ``<paths.cache_dir>/<name>-<hash>.pt`` and prints a summary.
"""

from __future__ import annotations

import sys
from pathlib import Path

from optstudy import cli
from optstudy.data import build_datamodule
from optstudy.data.cache import cache_file, load_shared
from optstudy.validation import validate_data


def summary(path: Path) -> str:
    """What the cache file at ``path`` holds, in a few lines."""
    splits = load_shared(path)
    shape = "×".join(map(str, splits.train_images.shape[1:]))
    test = len(splits.test_labels) or "no"
    return (
        f"{path}\n{len(splits.train_labels)} training and {test} test images of {shape} "
        f"(C×H×W), {len(splits.classes)} classes (data.num_classes={len(splits.classes)}): "
        f"{', '.join(splits.classes)}"
    )


def main(argv: list[str] | None = None) -> int:
    """Prepare the data set of a composed config (the train.py overrides on the command line)
    and check it against that config, as a training run would."""

    def action() -> None:
        cfg, _ = cli.compose(sys.argv[1:] if argv is None else argv)
        validate_data(cfg)
        datamodule = build_datamodule(cfg.data, cfg.seed)
        datamodule.prepare_data()  # decodes into the cache, checks shape and classes
        print(summary(cache_file(datamodule.source, datamodule.cache_dir)))

    return cli.command(action)


if __name__ == "__main__":
    sys.exit(main())
