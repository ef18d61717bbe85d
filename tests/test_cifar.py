"""The CIFAR-10 source on real-format tarballs and folders: exact parsing, checksums, failures."""

import functools
import hashlib
import http.server
import logging
import os
import pickle
import threading

import numpy as np
import pytest
import torch
from formats import CIFAR_CLASSES, cifar_batches, write_cifar

from optstudy.data.cifar import ARCHIVE, CifarSource
from optstudy.data.cifar_batches import FOLDER, MEMBERS
from optstudy.data.safe_pickle import safe_loads
from optstudy.errors import DataError


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def member_md5s(folder) -> dict[str, str]:
    return {name: md5(folder / name) for name in MEMBERS}


def test_parse_is_exact(cifar_tarball):
    splits = CifarSource(root=str(cifar_tarball.parent), md5=md5(cifar_tarball)).load()
    batches = cifar_batches()
    rows = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    labels = [c for i in range(1, 6) for c in batches[f"data_batch_{i}"][b"labels"]]
    assert (
        splits.train_images.shape == (500, 3, 32, 32) and splits.train_images.dtype == torch.uint8
    )
    assert splits.train_labels.tolist() == labels and splits.train_labels.dtype == torch.int64
    # Row layout: byte c·1024 + y·32 + x is channel c (R, G, B) of pixel (y, x).
    image = splits.train_images[137]
    for c, y, x in [(0, 0, 1), (1, 0, 0), (2, 31, 30), (1, 17, 5)]:
        assert image[c, y, x] == rows[137, c * 1024 + y * 32 + x]
    np.testing.assert_array_equal(splits.train_images.reshape(500, -1).numpy(), rows)
    np.testing.assert_array_equal(
        splits.test_images.reshape(100, -1).numpy(), batches["test_batch"][b"data"]
    )
    assert splits.test_labels.tolist() == batches["test_batch"][b"labels"]
    assert splits.classes == CIFAR_CLASSES


def test_root_may_be_the_tarball_its_folder_or_the_extracted_folder(tmp_path, cifar_tarball):
    tarball_md5 = md5(cifar_tarball)
    assert CifarSource(root=str(cifar_tarball), md5=tarball_md5).location() == cifar_tarball
    extracted = write_cifar(tmp_path / "x", cifar_batches(), tarball=False)
    sums = member_md5s(extracted)
    for root in (tmp_path / "x", extracted):
        source = CifarSource(root=str(root), md5=tarball_md5, extracted_md5=sums)
        assert source.location() == extracted
        assert torch.equal(
            source.load().train_images,
            CifarSource(root=str(cifar_tarball), md5=tarball_md5).load().train_images,
        )


def test_checksum_mismatch_fails_before_anything_is_unpickled(cifar_tarball, monkeypatch):
    def no_unpickling(*args, **kwargs):
        raise AssertionError("unpickled before the checksum was checked")

    monkeypatch.setattr("optstudy.data.cifar_batches.safe_loads", no_unpickling)
    source = CifarSource(root=str(cifar_tarball.parent), md5="c58f30108f718f92721af3b95e74349a")
    with pytest.raises(
        DataError,
        match=rf"checksum mismatch: {cifar_tarball} has md5 {md5(cifar_tarball)}, but data.md5 is",
    ):
        source.load()


def test_extracted_folder_is_checked_file_by_file(tmp_path):
    extracted = write_cifar(tmp_path, cifar_batches(), tarball=False)
    sums = member_md5s(extracted)
    (extracted / "data_batch_3").write_bytes(pickle.dumps(cifar_batches(50)["data_batch_3"], 2))
    source = CifarSource(root=str(extracted), md5="any", extracted_md5=sums)
    with pytest.raises(
        DataError, match=r"data_batch_3 has md5 .* but data.source.extracted_md5.data_batch_3"
    ):
        source.location()


def test_null_md5_skips_the_check_with_a_warning(cifar_tarball, caplog):
    with caplog.at_level(logging.WARNING):
        splits = CifarSource(root=str(cifar_tarball.parent), md5=None).load()
    assert len(splits.train_labels) == 500
    assert "data.md5 is null" in caplog.text and "NOT checked" in caplog.text


@pytest.mark.parametrize("keep", [0.3, 0.9, 0.999])
def test_truncated_tarball_is_a_clear_error(tmp_path, cifar_tarball, keep):
    cut = tmp_path / ARCHIVE
    data = cifar_tarball.read_bytes()
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(DataError, match="checksum mismatch"):
        CifarSource(root=str(tmp_path), md5=md5(cifar_tarball)).load()
    with pytest.raises(DataError, match=f"cannot read {cut}: truncated or not a gzip"):
        CifarSource(root=str(tmp_path), md5=None).load()


def test_foreign_archives_are_clear_errors(tmp_path):
    plain = tmp_path / "plain" / ARCHIVE
    plain.parent.mkdir()
    plain.write_bytes(b"<html>a login page, not the data set</html>")
    with pytest.raises(DataError, match="truncated or not a gzip-compressed tar archive"):
        CifarSource(root=str(plain.parent), md5=None).load()
    other = write_cifar(tmp_path / "other" / ARCHIVE, {"data_batch_1": {b"data": b"x"}})
    with pytest.raises(
        DataError, match=f"not the CIFAR-10 python archive: it lacks {FOLDER}/data_batch_2"
    ):
        CifarSource(root=str(other.parent), md5=None).load()


def test_wrong_batch_contents_are_clear_errors(tmp_path):
    batches = cifar_batches(20)
    batches["data_batch_2"][b"data"] = batches["data_batch_2"][b"data"][:, :3000]
    with pytest.raises(DataError, match="data_batch_2 rows are 3000 bytes, not 3072"):
        CifarSource(root=str(write_cifar(tmp_path / "a.tar.gz", batches)), md5=None).load()
    batches = cifar_batches(20)
    batches["test_batch"][b"labels"][3] = 10
    with pytest.raises(DataError, match=r"test_batch has labels outside 0\.\.9"):
        CifarSource(root=str(write_cifar(tmp_path / "b.tar.gz", batches)), md5=None).load()


class Exploit:
    """A pickle that would run a shell command when unpickled by a plain ``pickle.load``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickles_may_not_run_code(tmp_path):
    batches = cifar_batches(10)
    batches["data_batch_1"][b"labels"] = Exploit(tmp_path / "pwned")
    source = CifarSource(root=str(write_cifar(tmp_path / "evil.tar.gz", batches)), md5=None)
    with pytest.raises(DataError, match=r"data_batch_1 is not a readable CIFAR-10 batch"):
        source.load()
    assert not (tmp_path / "pwned").exists()


def test_pickles_from_numpy_1_load_too():
    """The official batches were pickled by numpy 1.x, whose arrays refer to numpy.core."""
    batch = cifar_batches(3)["test_batch"]
    modern = pickle.dumps(batch, protocol=2)
    legacy = modern.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert legacy != modern
    np.testing.assert_array_equal(safe_loads(legacy)[b"data"], batch[b"data"])


def test_nothing_found_names_every_place_and_the_fix(tmp_path):
    source = CifarSource(search_dirs=[str(tmp_path / "a"), str(tmp_path / "b")], download=False)
    with pytest.raises(
        DataError, match=rf"cifar10 not found: .* in: {tmp_path}/a, {tmp_path}/b\. Set data.root"
    ):
        source.location()


@pytest.fixture
def served_tarball(cifar_tarball):
    """Serve the tarball's folder over HTTP on the loopback interface."""
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(cifar_tarball.parent)
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{ARCHIVE}"
    server.shutdown()


def test_download_is_verified_then_parsed(tmp_path, cifar_tarball, served_tarball):
    source = CifarSource(url=served_tarball, md5=md5(cifar_tarball), download_dir=str(tmp_path))
    assert len(source.load().test_labels) == 100
    assert md5(tmp_path / ARCHIVE) == md5(cifar_tarball)


def test_download_with_wrong_checksum_fails_and_keeps_nothing(tmp_path, served_tarball):
    source = CifarSource(url=served_tarball, md5="0" * 32, download_dir=str(tmp_path))
    with pytest.raises(DataError, match=r"Download from .* failed"):
        source.load()
    assert not (tmp_path / ARCHIVE).exists()


def test_the_tarball_is_read_in_place_not_extracted(cifar_tarball):
    CifarSource(root=str(cifar_tarball), md5=None).load()
    assert list(cifar_tarball.parent.iterdir()) == [cifar_tarball]
