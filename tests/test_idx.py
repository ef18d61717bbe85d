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


def test_header_bytes_are_the_official_layout(tmp_path):
    path = write_idx(tmp_path / "x.gz", np.zeros((2, 3, 4), dtype=np.uint8))
    with gzip.open(path) as f:
        raw = f.read()
    assert raw[:4] == b"\x00\x00\x08\x03"
    assert raw[4:16] == (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + (4).to_bytes(4, "big")
    assert len(raw) == 16 + 24


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
