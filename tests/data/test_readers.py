"""Data: real files from ../shared, md5-checked downloads from a local server, safe extraction."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from supermask import data
from supermask.data import DataError
from tests.helpers.data import fake_cifar_archive, register_fake_cifar10


def test_mnist_from_shared(shared_data: Path) -> None:
    arrays = data.load_arrays("mnist", shared_data / "mnist")
    x, y = arrays["train"]
    assert x.shape == (60000, 1, 28, 28) and x.dtype == np.uint8
    assert arrays["test"][0].shape == (10000, 1, 28, 28)
    assert y[:5].tolist() == [5, 0, 4, 1, 9]


def test_mnist_unpacked_and_in_torchvisions_layout_is_read_and_checked(shared_data: Path, tmp_path: Path) -> None:
    """The raw IDX files (gunzipped, as torchvision's MNIST/raw holds them) are read offline, md5-checked;
    they used to be ignored, and a download tried."""

    gz = data.load_arrays("mnist", shared_data / "mnist")
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (shared_data / "mnist").glob("*.gz"):
        (raw / f.name.removesuffix(".gz")).write_bytes(gzip.decompress(f.read_bytes()))
    arrays = data.load_arrays("mnist", tmp_path)
    for split in ("train", "test"):
        assert all(np.array_equal(a, b) for a, b in zip(arrays[split], gz[split]))
    with open(raw / "t10k-labels-idx1-ubyte", "ab") as f:
        f.write(b"x")
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte has the wrong md5 .*unpacked"):
        data.load_arrays("mnist", tmp_path)


@pytest.mark.slow
def test_cifar10_jpeg75_from_shared(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPERMASK_DATA", str(tmp_path / "cache"))
    archive = shared_data / "cifar10-jpeg75" / "cifar-10-jpeg75-python.tar.gz"
    before = sorted(p.name for p in archive.parent.iterdir())
    arrays = data.load_arrays("cifar10-jpeg75", archive.parent)
    assert sorted(p.name for p in archive.parent.iterdir()) == before  # nothing written beside the archive
    assert any((tmp_path / "cache" / "cifar10-jpeg75").iterdir())
    x, y = arrays["train"]
    assert x.shape == (50000, 3, 32, 32) and np.bincount(y).tolist() == [5000] * 10
    assert np.bincount(arrays["test"][1]).tolist() == [1000] * 10
    assert data.describe("cifar10-jpeg75") == "CIFAR-10 (JPEG-75 rebuild)"
    # The rebuild is never accepted as the original CIFAR-10 archive.
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "cifar-10-python.tar.gz").symlink_to(archive)
    with pytest.raises(DataError, match="wrong md5"):
        data.load_arrays("cifar10", tmp_path / "o")
    # The unpacked folder of the rebuild is read when data.root holds it: each file's md5 is checked.
    extracted = next((tmp_path / "cache" / "cifar10-jpeg75").iterdir())
    again = data.load_arrays("cifar10-jpeg75", extracted)
    assert np.array_equal(again["test"][0], arrays["test"][0]) and np.array_equal(again["train"][1], y)


def test_unpacked_cifar_folder_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with tarfile.open(fileobj=io.BytesIO(fake_cifar_archive())) as tar:
        tar.extractall(tmp_path, filter="data")
    with pytest.raises(DataError, match="data_batch_1 has md5 .* expected c99cafc1"):  # not the real CIFAR-10
        data.load_arrays("cifar10", tmp_path)
    register_fake_cifar10(monkeypatch)  # now it is "CIFAR-10"
    arrays = data.load_arrays("cifar10", tmp_path)
    assert arrays["train"][0].shape == (50, 3, 32, 32)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_3", "r+b") as f:  # one changed byte in one member
        f.seek(200)
        byte = f.read(1)
        f.seek(200)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(DataError, match="data_batch_3 has md5"):
        data.load_arrays("cifar10", tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_3", "r+b") as f:
        f.seek(200)
        f.write(byte)
    data.load_arrays("cifar10", tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match="test_batch is missing"):
        data.load_arrays("cifar10", tmp_path)


def test_unpacked_folder_is_not_taken_for_the_rebuild(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with tarfile.open(fileobj=io.BytesIO(fake_cifar_archive())) as tar:
        tar.extractall(tmp_path, filter="data")
    register_fake_cifar10(monkeypatch)  # the fake plays the original CIFAR-10
    with pytest.raises(DataError, match=r"data_batch_1 has md5 .* it is cifar10 \(use data.name=cifar10\)"):
        data.load_arrays("cifar10-jpeg75", tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").unlink()
    with pytest.raises(DataError, match="data_batch_1 is missing"):
        data.load_arrays("cifar10-jpeg75", tmp_path)


@pytest.mark.slow
def test_unpacked_rebuild_is_never_taken_for_cifar10(shared_data: Path, tmp_path: Path) -> None:
    with tarfile.open(shared_data / "cifar10-jpeg75" / "cifar-10-jpeg75-python.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    with pytest.raises(DataError, match=r"it is CIFAR-10 \(JPEG-75 rebuild\) \(use data.name=cifar10-jpeg75\)"):
        data.load_arrays("cifar10", tmp_path)
    assert data.load_arrays("cifar10-jpeg75", tmp_path)["test"][0].shape == (10000, 3, 32, 32)


def test_unpickler_refuses_code(tmp_path: Path) -> None:
    import os as _os

    (tmp_path / "batch").write_bytes(pickle.dumps({"data": _os.system}))
    with pytest.raises(DataError, match="refusing to unpickle"):
        data._load_cifar_batch(tmp_path / "batch", "labels")


def test_corrupt_idx_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "x.idx"
    p.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 10, 1, 2]))
    with pytest.raises(DataError, match="truncated"):
        data.read_idx(p)
