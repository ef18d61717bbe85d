"""Seeded splits: the same validation (and test) images on every run and every machine."""

import pytest
import torch
from hydra.utils import instantiate

from optstudy.cli import compose
from optstudy.data import build_datamodule
from optstudy.data.digits import DigitsSource
from optstudy.data.splits import seeded_split
from optstudy.errors import ConfigError, find_user_error


def test_seeded_split_is_pinned():
    """E1's split of HollywoodStars' 1,800 images with seed 12, pinned: torch's CPU generator
    gives these indices on every machine. If a torch release changes it, this fails, and every
    validation set would silently change: that needs an explicit decision."""
    train, val = seeded_split(1800, 0.2, 12)
    assert (len(train), len(val)) == (1440, 360)
    assert val[:8].tolist() == [1563, 722, 1006, 66, 769, 1261, 291, 1537]
    assert sorted(train.tolist() + val.tolist()) == list(range(1800))


def _val_split(overrides: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    cfg, _ = compose(overrides)
    datamodule = build_datamodule(cfg.data, seed=0)
    datamodule.setup()
    return next(iter(datamodule.val_dataloader()))


def test_validation_split_depends_on_the_split_seed_only(stars_dir, cache_dir):
    data = ["data=hollywood_stars", f"data.root={stars_dir}", "data.image_size=[8,8]"]
    data.append(f"paths.cache_dir={cache_dir}")
    images, labels = _val_split(data)
    assert len(labels) == round(17 * 6 * 0.2)
    again, _ = _val_split([*data, "seed=5"])  # the run seed orders batches, not the split
    other, _ = _val_split([*data, "data.split_seed=13"])
    assert torch.equal(images, again) and not torch.equal(images, other)


def _source(overrides: list[str]):
    return instantiate(compose([*overrides, "data.root=/tmp"])[0].data.source)


@pytest.mark.parametrize("data", ["digits", "image_folder"])
def test_sources_without_a_test_split_share_its_keys(data):
    """digits and an image folder both carve their test split by data.test_fraction and
    data.split_seed."""
    source = _source([f"data={data}", "data.test_fraction=0.3", "data.split_seed=7"])
    assert (source.test_fraction, source.split_seed) == (0.3, 7)
    with pytest.raises(Exception) as info:  # Hydra wraps what the source raises
        _source([f"data={data}", "data.test_fraction=1.0"])
    error = find_user_error(info.value)
    assert isinstance(error, ConfigError)
    assert str(error) == "data.test_fraction=1.0 is invalid: must be in [0, 1)"


def test_digits_default_test_split_is_unchanged():
    """The default (0.2 drawn with seed 0) tests on the images digits has always tested on."""
    from sklearn.datasets import load_digits

    labels = torch.from_numpy(load_digits().target)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    splits = _source(["data=digits"]).load()
    assert torch.equal(splits.test_labels, labels[order[:359]])
    assert torch.equal(splits.train_labels, labels[order[359:]])
    assert not torch.equal(DigitsSource(split_seed=1).load().test_labels, splits.test_labels)
