"""Shared fixtures: config composition, run helpers and small data sets in real formats."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from formats import cifar_batches, write_cifar, write_image_folder, write_mnist_folder
from hydra.utils import instantiate

from optstudy import cli
from optstudy.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
# Every ready-made optimizer config (custom.yaml is a template: it names no optimizer).
OPTIMIZERS = sorted(p.stem for p in (CONF / "optimizer").glob("*.yaml") if p.stem != "custom")
# The optimizers beyond torch.optim's classic eleven (from torch.optim where it has them).
NEW_OPTIMIZERS = [
    "muon", "adafactor", "lion", "schedulefree_adamw", "schedulefree_sgd", "prodigy", "soap",
    "adopt",
]  # fmt: skip
cli.project_root(ROOT)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One decoded-data cache shared by the whole test session."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> Path:
    """The folder of the real Fashion-MNIST files, wherever train.py finds them without a
    download (data/fashion_mnist/, then the Debian package's folder); required in CI."""
    cfg, _ = cli.compose(["data=fashion_mnist", f"paths.root_dir={ROOT}"])
    try:
        files = instantiate(cfg.data.source, download=False).files()
    except DataError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide Fashion-MNIST (make data): {exc}")
        pytest.skip(f"Fashion-MNIST not found (make data): {exc}")
    return files[0].parent


@pytest.fixture(scope="session")
def tiny_mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small MNIST-format folder (IDX .gz) whose images encode their labels."""
    return write_mnist_folder(tmp_path_factory.mktemp("tiny_mnist"))


@pytest.fixture(scope="session")
def cifar_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real-format cifar-10-python.tar.gz with 100 labelled images per batch."""
    return write_cifar(tmp_path_factory.mktemp("cifar") / "cifar-10-python.tar.gz", cifar_batches())


@pytest.fixture(scope="session")
def stars_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 17-class image folder (the shape of E1's HollywoodStars), 6 mixed images a class."""
    names = [f"Star {chr(ord('A') + i)}" for i in range(17)]
    return write_image_folder(tmp_path_factory.mktemp("stars"), names, per_class=6)


def copy_project(dest: Path) -> Path:
    """Copy the project's files (tracked, and new ones git does not ignore) into ``dest``: what
    a fresh clone of this working tree holds."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for name in files:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.fixture(scope="session")
def vgg16_weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded VGG16 state dict in torchvision's layout, for ``model.weights=<file>``: the conv
    base under ``features.N.*`` plus a classifier key that the transfer model ignores."""
    import torch

    from optstudy.models.vgg16_transfer import vgg16_features

    with torch.random.fork_rng():
        torch.manual_seed(42)
        state = {f"features.{k}": v for k, v in vgg16_features(3).state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4, 8)  # the real one is 4096×25088
    path = tmp_path_factory.mktemp("weights") / "vgg16.pth"
    torch.save(state, path)
    return path


def train_command(args: list[str], run_dir: Path, cache: Path) -> list[str]:
    """``python train.py ARGS`` with its run directory and cache in tmp, without progress bars."""
    return [
        sys.executable,
        str(ROOT / "train.py"),
        *args,
        f"hydra.run.dir={run_dir}",
        f"paths.cache_dir={cache}",
        "callbacks.progress_bar=null",
        "trainer.enable_progress_bar=false",
    ]


def run_train(
    args: list[str], run_dir: Path, cache: Path, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``python train.py`` as a user would, with its run directory and cache in tmp."""
    return subprocess.run(
        train_command(args, run_dir, cache),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file below ``directory``, by relative path, with its bytes."""
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(Path(directory).rglob("*"))
        if path.is_file()
    }


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def read_metrics(run_dir: Path) -> dict:
    """The metrics.json of a run directory, parsed strictly (NaN or Infinity: an error)."""
    return json.loads((run_dir / "metrics.json").read_text(), parse_constant=_not_json)


def comparable(metrics: dict) -> dict:
    """metrics.json without what differs between equal runs: the wall-clock time, and the group
    a run trained in (a grouped sweep's member equals the same run alone)."""
    return {k: v for k, v in metrics.items() if k not in ("train_time_s", "group")}


def read_history(run_dir: Path) -> list[dict]:
    """history.csv of a run directory without its wall-clock column, as rows."""
    with open(run_dir / "history.csv") as f:
        return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in csv.DictReader(f)]


@pytest.fixture(scope="session")
def fashion_sweep(tmp_path_factory, fashion_mnist_dir, cache_dir) -> Path:
    """A real multirun on Fashion-MNIST: SGD and Adam × seeds 0 and 1, LeNet-5, 2 epochs of 20
    batches, the lr logged and the optimizer diagnostics measured every 5 steps."""
    sweep_dir = tmp_path_factory.mktemp("sweeps") / "fashion"
    args = ["-m", "optimizer=sgd,adam", "seed=0,1", "trainer.max_epochs=2"]
    args += ["trainer.limit_train_batches=20", "trainer.limit_val_batches=2"]
    args += ["trainer.limit_test_batches=2", "trainer.log_every_n_steps=5"]
    args += ["callbacks.diagnostics.interval=5"]
    result = run_train([*args, f"hydra.sweep.dir={sweep_dir}"], sweep_dir / "unused", cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir
