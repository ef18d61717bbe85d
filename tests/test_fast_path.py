"""The pieces of the GPU fast path, checked on the CPU: memory layout, compile, synthetic data,
the fast_cifar model and its experiment, and peak GPU memory in metrics.json."""

import pytest
import torch
from hydra.utils import instantiate
from test_train_data_sets import train_in_process

from optstudy.cli import compose
from optstudy.data import build_datamodule
from optstudy.data.synthetic import SyntheticSource
from optstudy.errors import ConfigError
from optstudy.module import input_memory_format

TINY_SYNTHETIC = ["data=synthetic", "data.source.train_size=600", "data.source.test_size=100"]


@pytest.mark.parametrize(
    ("asked", "device", "expected"),
    [
        (None, "cpu", torch.contiguous_format),
        (None, "cuda", torch.channels_last),
        (True, "cpu", torch.channels_last),
        (False, "cuda", torch.contiguous_format),
    ],
)
def test_channels_last_is_on_for_gpus_unless_set(asked, device, expected):
    assert input_memory_format(asked, torch.device(device)) == expected


def test_synthetic_source_is_seeded_and_shaped():
    def source(seed):
        return SyntheticSource("synthetic", 1, [28, 28], 10, 50, 20, seed)

    a, b, c = source(0).load(), source(0).load(), source(1).load()
    assert a.train_images.shape == (50, 1, 28, 28) and a.train_images.dtype == torch.uint8
    assert a.test_labels.shape == (20,) and set(a.train_labels.tolist()) <= set(range(10))
    assert torch.equal(a.train_images, b.train_images) and torch.equal(a.test_labels, b.test_labels)
    assert not torch.equal(a.train_images, c.train_images)
    assert source(0).fingerprint() != source(1).fingerprint()  # a new seed is a new cache file


def test_synthetic_source_takes_a_square_size_and_needs_a_class_count(cache_dir):
    cfg, _ = compose([*TINY_SYNTHETIC, "data.image_size=12", f"paths.cache_dir={cache_dir}"])
    datamodule = build_datamodule(cfg.data, 0)
    datamodule.setup()
    images, _ = next(iter(datamodule.train_dataloader()))
    assert images.shape == (128, 3, 12, 12) and datamodule.num_classes == 10
    with pytest.raises(ConfigError, match=r"^data\.num_classes=null: synthetic data needs"):
        SyntheticSource("synthetic", 3, 12, None, 10, 10)


def test_fast_cifar_parameter_count():
    cfg, _ = compose(["model=fast_cifar", "data=cifar10"])
    net = instantiate(cfg.model)

    def conv_bn(c_in, c_out):  # 3×3 conv without bias, BN scale and shift
        return 9 * c_in * c_out + 2 * c_out

    blocks = sum(conv_bn(c_in, w) + conv_bn(w, w) for c_in, w in [(32, 64), (64, 256), (256, 256)])
    assert sum(p.numel() for p in net.parameters()) == conv_bn(3, 32) + blocks + 256 * 10


def test_channels_last_run_matches_the_default_layout(tmp_path, cache_dir):
    args = ["data=digits", "model=cnn_2c2d", "trainer.max_epochs=2", "trainer=cpu"]
    nchw = train_in_process(args, tmp_path / "nchw", cache_dir)
    nhwc = train_in_process([*args, "module.channels_last=true"], tmp_path / "nhwc", cache_dir)
    # Other conv kernels, other rounding: equal up to float error, not bit for bit.
    assert nhwc["final_train_loss"] == pytest.approx(nchw["final_train_loss"], rel=1e-3)
    assert nhwc["test_acc"] == pytest.approx(nchw["test_acc"], abs=0.02)
    assert nchw["peak_gpu_memory_mb"] is None  # a CPU run has no GPU memory to report


def test_fast_cifar10_recipe_trains_on_the_cpu(tmp_path, cache_dir):
    args = ["recipe=fast_cifar10", "trainer=cpu", *TINY_SYNTHETIC, "data.batch_size=128"]
    metrics = train_in_process([*args, "trainer.max_epochs=2"], tmp_path / "run", cache_dir)
    assert metrics["status"] == "completed" and metrics["steps"] == 2 * 5  # 588 / 128 → 5
    assert (metrics["model"], metrics["optimizer"]) == ("fast_cifar", "nesterov")


@pytest.mark.slow
def test_compiled_run_matches_the_eager_run(tmp_path, cache_dir):
    args = ["data=digits", "model=cnn_2c2d", "trainer.max_epochs=1", "trainer=cpu"]
    eager = train_in_process(args, tmp_path / "eager", cache_dir)
    compiled = train_in_process([*args, "module.compile=true"], tmp_path / "compiled", cache_dir)
    assert compiled["final_train_loss"] == pytest.approx(eager["final_train_loss"], rel=1e-3)
