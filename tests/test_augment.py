"""Batch augmentation: each operation does what it says, per image, seeded, training only."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import CONF
from hydra.utils import instantiate

from optstudy.cli import compose
from optstudy.data.augment import BatchAugment
from optstudy.data.datamodule import TensorDataModule
from optstudy.errors import ConfigError

AUGMENTS = sorted(p.stem for p in (CONF / "augment").glob("*.yaml"))


def batch(n=64, h=12, w=10, seed=0) -> torch.Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_choices_exist_and_compose():
    assert set(AUGMENTS) >= {"none", "flip_crop", "e2"}
    assert compose([])[1]["augment"] == "none"
    flip_crop = instantiate(compose(["augment=flip_crop", "augment.cutout=8"])[0].augment)
    assert (flip_crop.hflip, flip_crop.crop_padding, flip_crop.cutout) == (True, 4, 8)
    e2 = instantiate(compose(["augment=e2"])[0].augment)
    assert e2.hflip and 0 < e2.max_rotation <= 20 and e2.crop_padding == 0


def test_none_returns_the_batch_untouched():
    images = batch()
    assert instantiate(compose([])[0].augment)(images) is images


def test_flip_mirrors_about_half_the_images():
    images = batch()
    torch.manual_seed(0)
    out = BatchAugment(hflip=True)(images)
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, images, strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(out, images, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))
    assert 16 < sum(flipped) < 48


def shifted(image: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """``image`` padded with zeros and cropped back: output(y, x) = input(y + dy, x + dx)."""
    p = max(abs(dx), abs(dy))
    h, w = image.shape[-2:]
    padded = F.pad(image, (p, p, p, p))
    return padded[..., p + dy : p + dy + h, p + dx : p + dx + w]


def test_crop_is_an_integer_shift_within_the_padding():
    images = batch()
    torch.manual_seed(1)
    out = BatchAugment(crop_padding=3)(images)
    shifts = []
    for o, i in zip(out, images, strict=True):
        match = [
            (dx, dy)
            for dx in range(-3, 4)
            for dy in range(-3, 4)
            if torch.allclose(o, shifted(i, dx, dy), atol=1e-5)
        ]
        assert len(match) == 1
        shifts.append(match[0])
    assert len(set(shifts)) > 10  # each image draws its own shift


def disc(h: int, w: int, radius: float, centre=None) -> torch.Tensor:
    cy, cx = centre or ((h - 1) / 2, (w - 1) / 2)
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return (((y - cy) ** 2 + (x - cx) ** 2) <= radius**2).float()


def test_rotation_turns_content_about_the_centre_keeping_its_shape():
    h, w = 24, 40  # not square: a disc must stay a disc, not turn into an ellipse
    centred = disc(h, w, 8).expand(32, 3, h, w)
    torch.manual_seed(2)
    out = BatchAugment(max_rotation=30)(centred)
    # At most a pixel in 10 of the 201-pixel disc changes (its jagged edge); without the
    # aspect-ratio correction up to 70 would.
    assert ((out[:, 0] > 0.5).float() - centred[:, 0]).abs().sum(dim=(1, 2)).max() <= 20
    # A small disc 10.5 pixels right of the centre moves up or down by 10.5·sin(angle).
    off = disc(h, w, 3, centre=(11.5, 30)).expand(32, 3, h, w)
    moved = BatchAugment(max_rotation=30)(off)[:, 0]
    centroid_y = (moved * torch.arange(h)[:, None]).sum((1, 2)) / moved.sum((1, 2))
    angles = torch.asin((centroid_y - 11.5) / 10.5).rad2deg().abs()
    assert angles.max() <= 31 and angles.std() > 3  # varied angles, none beyond the limit


def test_cutout_blanks_one_square_per_image():
    images = batch() + 10  # no zeros before cutout
    torch.manual_seed(3)
    out = BatchAugment(cutout=4)(images)
    blank = out == 0
    assert torch.equal(out[~blank], images[~blank])
    per_image = blank[:, 0].sum(dim=(1, 2))
    assert per_image.max() == 16 and per_image.min() >= 4  # clipped at the borders
    assert torch.equal(blank[:, 0], blank[:, 2])  # all channels


def test_same_seed_same_augmentation():
    augment = BatchAugment(hflip=True, crop_padding=2, max_rotation=10, cutout=3)
    torch.manual_seed(7)
    a = augment(batch())
    torch.manual_seed(7)
    assert torch.equal(a, augment(batch()))


@pytest.mark.parametrize(
    "kwargs",
    [{"crop_padding": -1}, {"max_rotation": 200}, {"cutout": 2.5}, {"padding_mode": "mirror"}],
    ids=str,
)
def test_invalid_settings_are_config_errors(kwargs):
    with pytest.raises(ConfigError, match=f"augment.{next(iter(kwargs))}=.* is invalid"):
        BatchAugment(**kwargs)


def test_datamodule_augments_training_batches_only():
    calls = []

    def recording(images):
        calls.append(images.shape)
        return images * 0

    datamodule = TensorDataModule(
        source=None,
        cache_dir=".",
        batch_size=4,
        eval_batch_size=4,
        val_fraction=0.5,
        split_seed=0,
        shuffle_seed=0,
        channels=3,
        image_size=[5, 5],
        num_classes=2,
        mean=[0.5] * 3,
        std=[0.25] * 3,
        augment=recording,
    )
    uint8 = torch.full((4, 3, 5, 5), 255, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64)
    for training in (False, True):
        datamodule.trainer = SimpleNamespace(training=training)
        images, _ = datamodule.on_after_batch_transfer(uint8, 0)
        assert torch.all(images == (0 if training else 2))  # (1 − 0.5) / 0.25 unless augmented
    assert calls == [(4, 3, 5, 5)]
