"""Training and the prepare command on real-format CIFAR-10 and image folders.

One ``python train.py`` subprocess per kind of outcome (a run, a data error); the other runs go
through the same code in-process (:func:`optstudy.run.train`), which keeps the file fast.
"""

import hashlib
import json

import pytest
import torch
from conftest import ROOT, read_metrics, run_train
from formats import CIFAR_CLASSES, write_image_folder

from optstudy.cli import compose
from optstudy.data.cache import load_prepared
from optstudy.data.prepare import main as prepare_main
from optstudy.errors import DataError, find_user_error
from optstudy.run import train
from optstudy.validation import validate


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def classes_of(run_dir) -> list[str]:
    return json.loads((run_dir / "classes.json").read_text())


def train_in_process(overrides: list[str], run_dir, cache) -> dict:
    """What ``python train.py`` does after Hydra has composed the config."""
    quiet = ["callbacks.progress_bar=null", "trainer.enable_progress_bar=false"]
    cfg, choices = compose([*overrides, f"paths.cache_dir={cache}", *quiet], run_dir)
    validate(cfg)
    return train(cfg, run_dir, choices)


def test_prepared_cifar_trains_well_above_chance(tmp_path, cifar_tarball, capsys, monkeypatch):
    cache = tmp_path / "cache"
    data = ["data=cifar10", f"data.root={cifar_tarball.parent}", f"data.md5={md5(cifar_tarball)}"]
    monkeypatch.setenv("OPTSTUDY_ROOT", str(ROOT))
    assert prepare_main([*data, f"paths.cache_dir={cache}"]) == 0
    summary = "500 training and 100 test images of 3×32×32 (C×H×W), 10 classes"
    assert summary in capsys.readouterr().out
    (cached,) = cache.glob("cifar10-*.pt")
    written = cached.stat().st_mtime_ns

    run_dir = tmp_path / "run"
    args = ["model=lenet5", "optimizer=adam", "augment=e2", "trainer.max_epochs=3"]
    result = run_train([*data, *args, "data.batch_size=32"], run_dir, cache)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_metrics(run_dir)
    assert metrics["test_acc"] > 0.8  # chance: 0.1; labels and images stay aligned
    assert (metrics["data"], metrics["augment"]) == ("cifar10", "e2")
    assert classes_of(run_dir) == CIFAR_CLASSES
    assert cached.stat().st_mtime_ns == written  # training used the prepared cache


def test_image_folder_trains_well_above_chance(tmp_path, cache_dir):
    root = write_image_folder(tmp_path / "folder", ["b", "a", "d", "c"], per_class=30)
    data = ["data=image_folder", f"data.root={root}", "data.num_classes=4"]
    args = ["data.image_size=[16,16]", "data.batch_size=16", "trainer.max_epochs=3"]
    metrics = train_in_process([*data, *args, "model=lenet5"], tmp_path / "run", cache_dir)
    assert metrics["final_val_acc"] > 0.8  # chance: 0.25
    assert metrics["test_acc"] is None  # an image folder has no test split by default
    assert classes_of(tmp_path / "run") == ["a", "b", "c", "d"]


def test_hollywood_stars_with_vgg16_transfer_keeps_the_base_frozen(
    tmp_path, stars_dir, cache_dir, vgg16_weights_file
):
    data = ["data=hollywood_stars", f"data.root={stars_dir}", "data.image_size=[32,32]"]
    model = ["model=vgg16_transfer", f"model.weights={vgg16_weights_file}", "optimizer=adam"]
    run_dir = tmp_path / "run"
    metrics = train_in_process([*data, *model, "trainer.max_epochs=1"], run_dir, cache_dir)
    assert metrics["status"] == "completed" and metrics["test_acc"] is None
    assert metrics["steps"] == 6  # 82 of the 102 images train (20% validation), batch 16
    assert classes_of(run_dir) == sorted(p.name for p in stars_dir.iterdir())
    trained = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    base = torch.load(vgg16_weights_file, weights_only=True)
    base = {key: value for key, value in base.items() if key.startswith("features.")}
    assert len(base) == 26  # 13 convs: weight and bias
    assert all(torch.equal(trained[f"net.{key}"], value) for key, value in base.items())


def test_data_error_is_one_line_and_exit_2(tmp_path, cache_dir, cifar_tarball):
    run_dir = tmp_path / "run"
    result = run_train(["data=cifar10", f"data.root={cifar_tarball.parent}"], run_dir, cache_dir)
    assert result.returncode == 2
    assert (
        result.stderr.startswith("error: checksum mismatch: ") and "Traceback" not in result.stderr
    )
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "checkpoints").exists()


def test_corrupt_image_stops_the_run_before_training(tmp_path, cache_dir):
    root = write_image_folder(tmp_path / "folder", ["a", "b"], per_class=3)
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    data = ["data=image_folder", f"data.root={root}", "data.num_classes=2", "data.image_size=[8,8]"]
    with pytest.raises(Exception) as info:
        train_in_process(data, tmp_path / "run", cache_dir)
    error = find_user_error(info.value)
    assert isinstance(error, DataError) and "a/broken.png" in str(error)
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert not (tmp_path / "run" / "checkpoints").exists()


def cached_images(cache) -> torch.Tensor:
    """The training images of the one data set decoded into ``cache``."""
    (path,) = cache.glob("*.pt")
    return load_prepared(path).train_images


def test_image_folder_trains_with_nothing_but_its_root_and_image_size(tmp_path):
    """The class count comes from the folder: a complete run, the model built for 3 classes."""
    root = write_image_folder(tmp_path / "folder", ["dog", "cat", "bird"], per_class=8)
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    args = ["data=image_folder", f"data.root={root}", "data.image_size=32", "trainer.max_epochs=1"]
    result = run_train(args, run_dir, cache)
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_metrics(run_dir)["status"] == "completed"
    assert classes_of(run_dir) == ["bird", "cat", "dog"]
    files = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()}
    expected = ["history.csv", "diagnostics.csv", "run_info.json", "checkpoints/last.ckpt"]
    assert set(expected) <= files
    trained = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert trained["net.classifier.4.weight"].shape == (3, 84)  # LeNet-5's output layer
    assert cached_images(cache).shape == (24, 3, 32, 32)  # validation is carved later


def test_image_folder_takes_height_and_width(tmp_path):
    root = write_image_folder(tmp_path / "folder", ["a", "b", "c"], per_class=8)
    data = ["data=image_folder", f"data.root={root}", "data.image_size=[12,20]"]
    metrics = train_in_process([*data, "trainer.max_epochs=1"], tmp_path / "run", tmp_path / "c")
    assert metrics["status"] == "completed" and classes_of(tmp_path / "run") == ["a", "b", "c"]
    assert cached_images(tmp_path / "c").shape == (24, 3, 12, 20)


@pytest.mark.parametrize(
    ("setting", "error"),
    [
        (
            "data.image_size=32x32",
            "error: data.image_size='32x32' is invalid: must be an integer >= 1 (a square",
        ),
        (
            "data.num_classes=2",
            "error: image_folder: 3 classes found but data.num_classes is 2; set "
            "data.num_classes=3, or null",
        ),
    ],
    ids=["string image size", "wrong class count"],
)
def test_bad_image_folder_settings_are_one_line_and_exit_2(tmp_path, setting, error):
    root = write_image_folder(tmp_path / "folder", ["a", "b", "c"], per_class=2)
    run_dir = tmp_path / "run"
    args = ["data=image_folder", f"data.root={root}", setting]
    result = run_train(args, run_dir, tmp_path / "cache")
    assert result.returncode == 2
    assert result.stderr.startswith(error) and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in run_dir.iterdir()) == [".hydra", "train.log"]  # nothing else


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["data=cifar10", "model=resnet18", "optimizer=sgd"],
        ["data=hollywood_stars", "model=vgg16_transfer", "optimizer=adam"],  # 336×336
    ],
    ids=["cifar10-resnet18-sgd", "hollywood_stars-vgg16_transfer-adam"],
)
def test_issue_commands_run_on_real_format_data(
    tmp_path, cifar_tarball, stars_dir, vgg16_weights_file, args
):
    """The commands the data sets were built for, one epoch each (minutes on a CPU)."""
    data = {
        "data=cifar10": [f"data.root={cifar_tarball.parent}", f"data.md5={md5(cifar_tarball)}"],
        "data=hollywood_stars": [f"data.root={stars_dir}", f"model.weights={vgg16_weights_file}"],
    }[args[0]]
    run_dir = tmp_path / "run"
    result = run_train([*args, *data, "trainer.max_epochs=1"], run_dir, tmp_path / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_metrics(run_dir)["status"] == "completed"
