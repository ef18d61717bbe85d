"""MNIST-family sources: where files are found, verified downloads, and clear failures."""

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from formats import labelled_images, write_mnist_folder

from optstudy.data.cache import load_prepared, prepare
from optstudy.data.digits import DigitsSource
from optstudy.data.mnist import FILES, IdxSource
from optstudy.errors import DataError

CLASSES = [str(i) for i in range(10)]


def test_parse_is_exact(tmp_path):
    folder = write_mnist_folder(tmp_path / "m", n_train=50, n_test=20)
    splits = IdxSource("m", CLASSES, root=str(folder)).load()
    images, labels = labelled_images(50, seed=1)
    assert splits.train_images.shape == (50, 1, 28, 28) and splits.train_images.dtype == torch.uint8
    np.testing.assert_array_equal(splits.train_images[:, 0].numpy(), images)
    np.testing.assert_array_equal(splits.train_labels.numpy(), labels)
    assert splits.test_labels.dtype == torch.int64 and len(splits.test_labels) == 20


def test_search_order_root_then_search_dirs(tmp_path):
    first = write_mnist_folder(tmp_path / "first", n_train=10, n_test=5)
    second = write_mnist_folder(tmp_path / "second", n_train=20, n_test=5, gz=False)
    source = IdxSource("m", CLASSES, root=str(first), search_dirs=[str(second)])
    assert source.files()[0].parent == first
    source = IdxSource(
        "m", CLASSES, root=None, search_dirs=[str(tmp_path / "missing"), str(second)]
    )
    assert source.files()[0] == second / FILES["train_images"]  # uncompressed files work too


def test_folder_with_three_of_four_files_does_not_count(tmp_path):
    folder = write_mnist_folder(tmp_path / "m", n_train=10, n_test=5)
    (folder / (FILES["test_labels"] + ".gz")).unlink()
    with pytest.raises(DataError, match=f"not found.*Looked in: {folder}"):
        IdxSource("m", CLASSES, search_dirs=[str(folder)], download=False).files()
    with pytest.raises(DataError, match=f"data.root={folder} lacks {FILES['test_labels']}: "):
        IdxSource("m", CLASSES, root=str(folder), download=False).files()


def test_nothing_found_names_every_place_and_the_fix(tmp_path):
    source = IdxSource(
        "fashion_mnist",
        CLASSES,
        search_dirs=[str(tmp_path / "a"), str(tmp_path / "b")],
        download=False,
    )
    with pytest.raises(DataError) as info:
        source.files()
    message = str(info.value)
    assert (
        str(tmp_path / "a") in message and str(tmp_path / "b") in message and "data.root" in message
    )
    assert "train-images-idx3-ubyte, " in message and "each gzipped (.gz) or not" in message


@pytest.fixture
def http_folder(tmp_path):
    """Serve a folder over HTTP on the loopback interface."""
    served = write_mnist_folder(tmp_path / "served", n_train=30, n_test=10)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _md5s(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.glob("*.gz")}


def test_download_is_verified_then_parsed(tmp_path, http_folder):
    served, url = http_folder
    source = IdxSource(
        "m",
        CLASSES,
        search_dirs=[str(tmp_path / "dl")],
        base_url=url,
        md5=_md5s(served),
        download_dir=str(tmp_path / "dl"),
    )
    splits = source.load()
    assert len(splits.train_labels) == 30
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == sorted(_md5s(served))
    # A second source finds the downloaded files locally.
    assert IdxSource("m", CLASSES, search_dirs=[str(tmp_path / "dl")], download=False).files()


def test_download_with_wrong_checksum_fails_and_keeps_nothing(tmp_path, http_folder):
    served, url = http_folder
    md5 = _md5s(served)
    md5[FILES["train_images"] + ".gz"] = "0" * 32
    source = IdxSource("m", CLASSES, base_url=url, md5=md5, download_dir=str(tmp_path / "dl"))
    with pytest.raises(DataError, match=r"Download from .* failed"):
        source.load()
    assert not (tmp_path / "dl").exists()  # nothing kept, not even the empty folder


def test_cache_is_written_once_and_loads_safely(tmp_path):
    folder = write_mnist_folder(tmp_path / "m", n_train=40, n_test=10)
    source = IdxSource("m", CLASSES, root=str(folder))
    path = prepare(source, tmp_path / "cache")
    mtime = path.stat().st_mtime_ns
    assert prepare(source, tmp_path / "cache") == path and path.stat().st_mtime_ns == mtime
    loaded = load_prepared(path)
    assert loaded.classes == CLASSES and loaded.train_images.shape == (40, 1, 28, 28)
    # Changing the raw files changes the cache key.
    write_mnist_folder(folder, n_train=41, n_test=10)
    assert prepare(IdxSource("m", CLASSES, root=str(folder)), tmp_path / "cache") != path


def test_digits_source_scales_to_uint8_and_splits_by_seed():
    a, b = DigitsSource().load(), DigitsSource().load()
    assert a.train_images.dtype == torch.uint8 and int(a.train_images.max()) == 255
    assert len(a.train_labels) + len(a.test_labels) == 1797 and len(a.test_labels) == 359
    assert torch.equal(a.test_labels, b.test_labels)
