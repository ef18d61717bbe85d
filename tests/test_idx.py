"""The IDX parser on files written in the real format."""

import gzip

import numpy as np
import pytest
from formats import write_idx

from optstudy.data.idx import read_idx
from optstudy.errors import DataError


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_round_trip_uint8_images(tmp_path, name):
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    out = read_idx(write_idx(tmp_path / name, images))
    assert out.dtype == np.uint8 and out.shape == (7, 28, 28)
    np.testing.assert_array_equal(out, images)


def test_round_trip_labels_and_big_endian_ints(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "l.gz", labels)), labels)
    ints = np.array([[1, -2], [70000, 3]], dtype=">i4")
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "i", ints)), ints)


def test_reads_bytes_laid_out_as_the_format_describes(tmp_path):
    """Files written byte by byte from the IDX description (the MNIST page): two zero bytes,
    the type code, the number of dimensions, each dimension as a big-endian uint32, the data;
    the test helper writes those same bytes."""
    raw = bytes([0, 0, 0x08, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4]) + bytes(range(24))
    (tmp_path / "images").write_bytes(raw)
    expected = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(read_idx(tmp_path / "images"), expected)
    assert write_idx(tmp_path / "written", expected).read_bytes() == raw
    ints = bytes([0, 0, 0x0C, 1, 0, 0, 0, 2, 0, 1, 0x11, 0x70, 0xFF, 0xFF, 0xFF, 0xFE])
    with gzip.open(tmp_path / "ints.gz", "wb") as f:
        f.write(ints)
    out = read_idx(tmp_path / "ints.gz")
    assert out.tolist() == [70000, -2] and out.dtype == np.int32


def test_reads_the_real_fashion_mnist_files(fashion_mnist_dir):
    """The data set's published shape: 60,000 training and 10,000 test images of 28×28, each
    of the 10 classes exactly 6,000 and 1,000 times."""

    def read(name):
        (path,) = [p for p in fashion_mnist_dir.glob(f"{name}*") if p.name in (name, f"{name}.gz")]
        return read_idx(path)

    for split, n in (("train", 60_000), ("t10k", 10_000)):
        labels = read(f"{split}-labels-idx1-ubyte")
        assert labels.dtype == np.uint8
        assert np.bincount(labels).tolist() == [n // 10] * 10
    images = read("t10k-images-idx3-ubyte")
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert images.min() == 0 and images.max() == 255


def test_truncated_file_is_an_error(tmp_path):
    path = write_idx(tmp_path / "x", np.zeros((5, 4, 4), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataError, match="declares shape"):
        read_idx(path)


def test_foreign_file_is_an_error(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read"):
        read_idx(path)
    (tmp_path / "y").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(tmp_path / "y")
