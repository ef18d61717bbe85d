"""The image-folder source on real image files: modes, sizes, ignored and corrupt files, errors."""

import logging
import shutil

import numpy as np
import pytest
import torch
from formats import write_image_folder
from omegaconf import OmegaConf
from PIL import Image

from optstudy.cli import compose
from optstudy.data import build_datamodule
from optstudy.data.cache import cache_file
from optstudy.data.image_folder import ImageFolderSource
from optstudy.errors import ConfigError, DataError
from optstudy.image_size import image_hw
from optstudy.validation import validate


def source(root, size=(16, 16), **kwargs) -> ImageFolderSource:
    return ImageFolderSource("folder", str(root), list(size), **kwargs)


def test_every_mode_decodes_to_exact_rgb(tmp_path):
    rng = np.random.default_rng(0)
    h, w = 12, 10
    rgb, rgb2 = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    alpha, grey, cmy = rng.integers(0, 256, (3, h, w), dtype=np.uint8)
    index = rng.integers(0, 4, (h, w), dtype=np.uint8)
    palette = rng.integers(0, 256, (4, 3), dtype=np.uint8)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(rgb).save(tmp_path / "a" / "1.png")
    Image.fromarray(np.dstack([rgb2, alpha]), "RGBA").save(tmp_path / "a" / "2.png")
    Image.fromarray(grey, "L").save(tmp_path / "a" / "3.png")
    for name, transparency in (("1.png", None), ("2.png", 0)):
        image = Image.fromarray(index, "P")
        image.putpalette(palette.flatten().tolist())
        image.save(
            tmp_path / "b" / name, **({"transparency": transparency} if name == "2.png" else {})
        )
    cmyk = np.dstack([cmy, cmy[::-1], cmy[:, ::-1], np.zeros((h, w), np.uint8)])
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "b" / "3.tif")
    expected = [
        rgb,
        rgb2,
        np.dstack([grey] * 3),
        palette[index],
        palette[index],
        255 - cmyk[..., :3],
    ]

    splits = source(tmp_path, size=(h, w)).load()
    assert splits.classes == ["a", "b"] and splits.train_labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert splits.train_images.dtype == torch.uint8 and splits.train_images.shape == (6, 3, h, w)
    np.testing.assert_array_equal(
        splits.train_images.permute(0, 2, 3, 1).numpy(), np.stack(expected)
    )


def test_any_size_and_lossy_format_is_resized_to_the_configured_size(tmp_path):
    files = {  # name: (Pillow mode, width × height, colour)
        "1.jpg": ("RGB", (40, 30), (200, 30, 90)),
        "2.png": ("RGB", (7, 9), (10, 250, 60)),
        "3.JPEG": ("CMYK", (30, 40), (120, 120, 5)),
        "4.tiff": ("CMYK", (5, 50), (0, 90, 255)),
    }
    for cls in ("a", "b"):
        for name, (mode, (width, height), colour) in files.items():
            flat = np.full((height, width, 3), colour, dtype=np.uint8)
            (tmp_path / cls).mkdir(exist_ok=True)
            Image.fromarray(flat).convert(mode).save(tmp_path / cls / name)
    images = source(tmp_path, size=(16, 20)).load().train_images
    assert images.shape == (8, 3, 16, 20)
    colours = torch.tensor([colour for _, _, colour in files.values()] * 2, dtype=torch.int16)
    assert (images.to(torch.int16) - colours[:, :, None, None]).abs().max() <= 4  # JPEG rounding


def test_mixed_folder_classes_are_sorted_names_and_content_matches_labels(tmp_path):
    root = write_image_folder(tmp_path / "f", ["b class", "a class", "c"], per_class=12)
    (root / "a class" / "more").mkdir()
    shutil.copy(root / "a class" / "000.jpg", root / "a class" / "more" / "extra.jpg")
    (root / "readme.txt").write_text("ignored: not in a class folder")
    (root / ".cache").mkdir()
    (root / ".cache" / "x.png").write_bytes(b"ignored: hidden folder")
    splits = source(root).load()
    assert splits.classes == ["a class", "b class", "c"]
    assert torch.bincount(splits.train_labels).tolist() == [13, 12, 12]
    assert len(splits.test_labels) == 0 and splits.test_images.shape == (0, 3, 16, 16)
    # The white band of each image sits in the band of its label (content ↔ label aligned).
    # write_image_folder numbers the classes in the order given: b class 0, a class 1, c 2.
    written = {"a class": 1, "b class": 0, "c": 2}
    band_of = {splits.classes.index(name): label for name, label in written.items()}
    bright = (splits.train_images.float().mean(dim=(1, 3)) > 128).float()  # N×H rows
    centre = (bright * torch.arange(16)).sum(1) / bright.sum(1)
    bands = ((centre + 0.5) / 16 * 3 - 0.5).round().long().tolist()  # nearest band centre
    assert bands == [band_of[int(c)] for c in splits.train_labels]


@pytest.fixture
def damaged_dir(tmp_path):
    root = write_image_folder(tmp_path / "d", ["x", "y (2)"], per_class=4)
    (root / "x" / "broken.jpg").write_bytes(b"not a jpeg at all")
    good = (root / "y (2)" / "000.jpg").read_bytes()
    (root / "y (2)" / "cut (1).jpg").write_bytes(good[: len(good) // 2])
    return root


def test_a_file_that_does_not_decode_is_an_error_naming_it(damaged_dir):
    with pytest.raises(DataError) as info:
        source(damaged_dir).load()
    message = str(info.value)
    assert message.startswith(f"2 image file(s) in {damaged_dir} cannot be decoded: x/broken.jpg")
    assert "y (2)/cut (1).jpg (" in message and "data.skip_corrupt=true" in message


def test_skip_corrupt_warns_naming_every_skipped_file(damaged_dir, caplog):
    with caplog.at_level(logging.WARNING):
        splits = source(damaged_dir, skip_corrupt=True).load()
    assert torch.bincount(splits.train_labels).tolist() == [4, 4]
    assert "skipped 2 image file(s)" in caplog.text
    assert "x/broken.jpg" in caplog.text and "y (2)/cut (1).jpg" in caplog.text


def test_a_class_left_without_images_is_an_error(tmp_path):
    root = write_image_folder(tmp_path / "d", ["x", "y"], per_class=3)
    for path in (root / "y").glob("0*"):
        path.write_bytes(b"garbage")
    with pytest.raises(DataError, match="no image of class\\(es\\) 'y' decodes"):
        source(root, skip_corrupt=True).load()


def _one_class(root):
    write_image_folder(root, ["only"], per_class=2)


def _empty_class(root):
    write_image_folder(root, ["a", "b", "c"], per_class=2)
    for path in (root / "b").iterdir():
        path.unlink()
    (root / "b" / "notes.txt").write_text("no image here")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (None, "does not exist or is not a folder"),
        (_one_class, "holds 1 class sub-folder(s); an image folder needs at least 2"),
        (_empty_class, "class folder(s) 'b' hold no image files"),
    ],
    ids=["missing root", "one class", "empty class"],
)
def test_bad_folders_are_clear_errors(tmp_path, make, message):
    root = tmp_path / "data"
    if make:
        make(root)
    with pytest.raises(DataError) as info:
        source(root).load()
    assert message in str(info.value)


def test_unset_root_and_bad_settings_are_clear_errors():
    with pytest.raises(DataError, match=r"data\.root is not set"):
        ImageFolderSource("hollywood_stars", None, [8, 8]).load()
    with pytest.raises(ConfigError, match=r"data.image_size=\[0, 8\] is invalid"):
        ImageFolderSource("x", "/tmp", [0, 8])
    with pytest.raises(ConfigError, match=r"data\.test_fraction=1\.0 is invalid"):
        ImageFolderSource("x", "/tmp", [8, 8], test_fraction=1.0)


def test_optional_test_share_is_seeded(tmp_path):
    root = write_image_folder(tmp_path / "f", ["a", "b"], per_class=20)
    a, b = (source(root, test_fraction=0.25, split_seed=4).load() for _ in range(2))
    other = source(root, test_fraction=0.25, split_seed=5).load()
    assert len(a.test_labels) == 10 and len(a.train_labels) == 30
    assert torch.equal(a.test_images, b.test_images) and torch.equal(a.test_labels, b.test_labels)
    assert not torch.equal(a.test_images, other.test_images)


def test_cache_key_follows_contents_and_settings_not_location(tmp_path):
    root = write_image_folder(tmp_path / "f", ["a", "b"], per_class=3)
    key = cache_file(source(root), tmp_path)
    shutil.copytree(root, tmp_path / "copy")
    assert cache_file(source(tmp_path / "copy"), tmp_path) == key
    assert cache_file(source(root, size=(8, 8)), tmp_path) != key
    shutil.move(root / "a" / "000.jpg", root / "b" / "009.jpg")  # same bytes, other class
    assert cache_file(source(root), tmp_path) != key


def test_class_count_mismatch_tells_the_setting(tmp_path, cache_dir):
    root = write_image_folder(tmp_path / "f", ["a", "b", "c"], per_class=2)
    cfg, _ = compose(
        [
            "data=image_folder",
            f"data.root={root}",
            "data.num_classes=2",
            f"paths.cache_dir={cache_dir}",
        ]
    )
    datamodule = build_datamodule(cfg.data, 0)
    for step in (datamodule.prepare_data, datamodule.setup):  # a run checks before training
        with pytest.raises(DataError, match=r"3 classes found but data\.num_classes is 2; set"):
            step()


def test_image_size_is_one_number_or_height_and_width():
    assert image_hw(32) == (32, 32)
    assert image_hw(OmegaConf.create({"size": [12, 20]}).size) == (12, 20)  # as Hydra gives it
    assert image_hw((1, 1)) == (1, 1)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("32", "'32'"),
        ("32x32", "'32x32'"),
        (32.0, "32.0"),
        (True, "True"),
        (0, "0"),
        ([32], "[32]"),
        ([12, 0], "[12, 0]"),
        ([12, "20"], "[12, '20']"),
        ([1, 2, 3], "[1, 2, 3]"),
        (None, "None"),
    ],
)
def test_any_other_image_size_is_a_config_error_naming_it(value, shown):
    with pytest.raises(ConfigError) as info:
        image_hw(OmegaConf.create({"size": value}).size)
    assert str(info.value) == (
        f"data.image_size={shown} is invalid: must be an integer >= 1 (a square, e.g. 32) "
        "or [height, width] of integers >= 1 (e.g. [32,48])"
    )


def test_a_square_size_is_resized_to_and_cached_like_its_pair(tmp_path):
    root = write_image_folder(tmp_path / "f", ["a", "b"], per_class=3)
    square = ImageFolderSource("folder", str(root), 12)
    assert square.load().train_images.shape == (6, 3, 12, 12)
    assert cache_file(square, tmp_path) == cache_file(source(root, size=(12, 12)), tmp_path)


def test_class_count_is_the_folder_s_unless_given(tmp_path, cache_dir):
    root = write_image_folder(tmp_path / "f", ["b", "a", "c"], per_class=2)
    data = ["data=image_folder", f"data.root={root}", f"paths.cache_dir={cache_dir}"]
    for given, declared in (([], None), (["data.num_classes=3"], 3)):
        cfg, _ = compose([*data, *given])
        validate(cfg)
        datamodule = build_datamodule(cfg.data, 0)
        assert datamodule.declared_classes == declared
        datamodule.prepare_data()
        assert datamodule.num_classes == 3 and datamodule.classes == ["a", "b", "c"]


@pytest.mark.parametrize("value", ["1", "true", "'3'", "2.0"])
def test_a_class_count_that_is_not_null_or_an_integer_of_2_or_more_is_refused(tmp_path, value):
    data = ["data=image_folder", f"data.root={tmp_path}", f"data.num_classes={value}"]
    cfg, _ = compose(data)
    refused = r"^data\.num_classes=.* is invalid: (a string, )?must be (a number )?an integer"
    with pytest.raises(ConfigError, match=refused):
        validate(cfg)
