"""Data: real files from ../shared, md5-checked downloads from a local server, safe extraction."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import pickle
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from supermask import data
from supermask.data import DataError, DatasetInfo, RemoteFile


def test_mnist_from_shared(shared_data: Path) -> None:
    arrays = data.load_arrays("mnist", shared_data / "mnist")
    x, y = arrays["train"]
    assert x.shape == (60000, 1, 28, 28) and x.dtype == np.uint8
    assert arrays["test"][0].shape == (10000, 1, 28, 28)
    assert y[:5].tolist() == [5, 0, 4, 1, 9]


def test_mnist_unpacked_and_in_torchvisions_layout_is_read_and_checked(shared_data: Path, tmp_path: Path) -> None:
    """The raw IDX files (gunzipped, as torchvision's MNIST/raw holds them) are read offline, md5-checked;
    they used to be ignored, and a download tried."""
    import gzip

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


def test_tensor_loader_batches_augmentation_and_ranks() -> None:
    info = data.DATASETS["cifar10"]
    x = torch.randint(0, 256, (100, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(100)
    loader = data.TensorLoader(x, y, info, 32, train=True, seed=1)
    batches = list(loader)
    assert [len(b[1]) for b in batches] == [32, 32, 32, 4]
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == list(range(100))
    assert batches[0][0].dtype == torch.float32 and batches[0][0].shape == (32, 3, 32, 32)
    again = list(data.TensorLoader(x, y, info, 32, train=True, seed=1))
    assert torch.equal(again[0][0], batches[0][0])  # seeded: the same on resume
    ranks = [
        torch.cat([b[1] for b in data.TensorLoader(x, y, info, 16, train=True, seed=1, rank=r, world_size=2)])
        for r in (0, 1)
    ]
    assert len(ranks[0]) == len(ranks[1]) == 50 and not set(ranks[0].tolist()) & set(ranks[1].tolist())


def test_per_image_standardization_is_tensorflows() -> None:
    info = data.DATASETS["mnist"]
    x = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    x[4] = 7  # a blank image: its std is 0, TensorFlow divides by 1 / sqrt(pixels) instead
    ((batch, _),) = data.TensorLoader(x, torch.arange(5), info, 8, train=False, standardize="per_image")
    pixels = x.double().flatten(1).numpy()
    std = np.maximum(pixels.std(axis=1, keepdims=True), 1 / np.sqrt(784))  # tf.image.per_image_standardization
    expected = (pixels - pixels.mean(axis=1, keepdims=True)) / std
    assert np.allclose(batch.flatten(1).double().numpy(), expected, atol=1e-5)
    assert torch.equal(batch[4], torch.zeros_like(batch[4]))
    ((dataset_mean, _),) = data.TensorLoader(x, torch.arange(5), info, 8, train=False)
    assert not torch.allclose(dataset_mean, batch)  # the default: the data set's own mean and std
    with pytest.raises(ValueError, match="standardize='whitened'"):
        data.TensorLoader(x, torch.arange(5), info, 8, train=False, standardize="whitened")


def test_unshuffled_training_keeps_the_files_order_every_epoch() -> None:
    info = data.DATASETS["mnist"]
    x, y = torch.zeros(10, 1, 28, 28, dtype=torch.uint8), torch.arange(10)
    loader = data.TensorLoader(x, y, info, 4, train=True, seed=3, shuffle=False)
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        assert torch.cat([b[1] for b in loader]).tolist() == list(range(10))
    shuffled = data.TensorLoader(x, y, info, 4, train=True, seed=3)
    assert torch.cat([b[1] for b in shuffled]).tolist() != list(range(10))


def test_the_first_training_examples_only(shared_data: Path) -> None:
    train, test, _ = data.build_tensor_loaders(
        "mnist", str(shared_data / "mnist"), 1000, "cpu", 0, train_examples=55_000, shuffle=False
    )
    assert len(train) == 55 and len(test) == 10
    assert torch.cat([b[1] for b in train]).tolist()[:5] == [5, 0, 4, 1, 9]
    with pytest.raises(DataError, match="train_examples=60001: the training set holds only 60000"):
        data.build_tensor_loaders("mnist", str(shared_data / "mnist"), 1000, "cpu", 0, train_examples=60_001)


def test_random_crop_flip_is_a_crop_of_the_padded_image() -> None:
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    gen = torch.Generator().manual_seed(0)
    out = data.random_crop_flip(x, gen, padding=2)
    padded = torch.nn.functional.pad(x, (2,) * 4)
    for i in range(2):
        found = any(
            torch.equal(out[i], padded[i, :, r : r + 6, c : c + 6])
            or torch.equal(out[i], padded[i, :, r : r + 6, c : c + 6].flip(-1))
            for r in range(5)
            for c in range(5)
        )
        assert found


def _fake_members() -> tuple[RemoteFile, ...]:
    """The md5 of each file of the fake archive (so that a test can register the fake as a data set)."""
    with tarfile.open(fileobj=io.BytesIO(_fake_cifar_archive())) as tar:
        return tuple(
            RemoteFile(m.name.split("/")[-1], hashlib.md5(tar.extractfile(m).read()).hexdigest())  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        )


def _register_fake_cifar10(monkeypatch: pytest.MonkeyPatch, **changes: object) -> None:
    base = data.DATASETS["cifar10"]
    fields = dict(files=base.files, members=_fake_members(), **changes)
    monkeypatch.setitem(data.DATASETS, "cifar10", DatasetInfo(10, 3, 32, base.mean, base.std, True, **fields))  # type: ignore[arg-type]


def test_unpacked_cifar_folder_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with tarfile.open(fileobj=io.BytesIO(_fake_cifar_archive())) as tar:
        tar.extractall(tmp_path, filter="data")
    with pytest.raises(DataError, match="data_batch_1 has md5 .* expected c99cafc1"):  # not the real CIFAR-10
        data.load_arrays("cifar10", tmp_path)
    _register_fake_cifar10(monkeypatch)  # now it is "CIFAR-10"
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
    with tarfile.open(fileobj=io.BytesIO(_fake_cifar_archive())) as tar:
        tar.extractall(tmp_path, filter="data")
    _register_fake_cifar10(monkeypatch)  # the fake plays the original CIFAR-10
    with pytest.raises(DataError, match=r"data_batch_1 has md5 .* it is cifar10 \(use data.name=cifar10\)"):
        data.load_arrays("cifar10-jpeg75", tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").unlink()
    with pytest.raises(DataError, match="data_batch_1 is missing"):
        data.load_arrays("cifar10-jpeg75", tmp_path)


def test_unpacked_rebuild_is_never_taken_for_cifar10(shared_data: Path, tmp_path: Path) -> None:
    with tarfile.open(shared_data / "cifar10-jpeg75" / "cifar-10-jpeg75-python.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    with pytest.raises(DataError, match=r"it is CIFAR-10 \(JPEG-75 rebuild\) \(use data.name=cifar10-jpeg75\)"):
        data.load_arrays("cifar10", tmp_path)
    assert data.load_arrays("cifar10-jpeg75", tmp_path)["test"][0].shape == (10000, 3, 32, 32)


def _fake_cifar_archive() -> bytes:
    """The same bytes on every call: the gzip header's time is fixed (it holds the clock's second, so two
    archives made across a second's boundary had different md5s: a flaky test)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as packed, tarfile.open(fileobj=packed, mode="w") as tar:
        rng = np.random.default_rng(0)
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        for name in names:
            batch = {b"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8), b"labels": list(range(10))}
            raw = pickle.dumps(batch)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "served"
    root.mkdir()
    (root / "cifar-10-python.tar.gz").write_bytes(_fake_cifar_archive())

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):  # type: ignore[no-untyped-def]
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def test_download_with_right_and_wrong_md5(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPERMASK_DATA", str(tmp_path / "cache"))
    blob = _fake_cifar_archive()
    good = hashlib.md5(blob).hexdigest()
    base = data.DATASETS["cifar10"]
    fake = DatasetInfo(
        10,
        3,
        32,
        base.mean,
        base.std,
        True,
        urls=(server,),
        files=(RemoteFile("cifar-10-python.tar.gz", good),),
        members=_fake_members(),
    )
    monkeypatch.setitem(data.DATASETS, "cifar10", fake)
    arrays = data.load_arrays("cifar10", tmp_path / "root")
    assert arrays["train"][0].shape == (50, 3, 32, 32) and arrays["test"][1].tolist() == list(range(10))

    bad = DatasetInfo(
        10, 3, 32, base.mean, base.std, True, urls=(server,), files=(RemoteFile("cifar-10-python.tar.gz", "0" * 32),)
    )
    monkeypatch.setitem(data.DATASETS, "cifar10", bad)
    with pytest.raises(DataError, match="md5 .* expected 0000"):
        data.load_arrays("cifar10", tmp_path / "root2")
    assert not any(p.is_file() for p in (tmp_path / "root2").rglob("*"))  # nothing half-written

    offline = DatasetInfo(
        10,
        3,
        32,
        base.mean,
        base.std,
        True,
        urls=("http://127.0.0.1:9/",),
        files=(RemoteFile("cifar-10-python.tar.gz", good),),
    )
    monkeypatch.setitem(data.DATASETS, "cifar10", offline)
    with pytest.raises(DataError, match="cannot download"):
        data.load_arrays("cifar10", tmp_path / "root3")


def test_safe_extract_refuses_escaping_members(tmp_path: Path) -> None:
    for name, kind in [("../evil.txt", tarfile.REGTYPE), ("/abs.txt", tarfile.REGTYPE), ("link", tarfile.SYMTYPE)]:
        archive = tmp_path / "bad.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else ""
            tar.addfile(info, io.BytesIO(b""))
        with pytest.raises(DataError, match="refusing to extract"):
            data.safe_extract(archive, tmp_path / "out")
        assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out").exists()


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


def test_imagenet_folder_trains(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (tmp_path / "img" / split / cls).mkdir(parents=True)
            for i in range(4):
                arr = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
                Image.fromarray(arr).save(tmp_path / "img" / split / cls / f"{i}.png")
    from supermask.runconfig import load_run_config
    from supermask.train import train

    cfg = load_run_config(
        None,
        [
            "data.name=imagenet",
            f"data.root={tmp_path / 'img'}",
            "data.image_size=16",
            "data.workers=0",
            "data.batch_size=4",
            "model.name=mlp",
            "train.epochs=1",
            f"train.out_dir={tmp_path / 'runs'}",
        ],
    )
    result = train(cfg, log=lambda *_: None)
    assert 0.0 <= result["accuracy"] <= 1.0
    with pytest.raises(DataError, match="data.root"):
        data.build_folder_loaders(None, 16, 4, 0, 0)


def test_a_data_root_that_a_shipped_data_set_never_reads_is_named(tmp_path: Path) -> None:
    from supermask.data import DATASETS
    from supermask.runconfig import load_run_config
    from supermask.train import train

    assert not DATASETS["digits"].reads_root
    assert all(DATASETS[name].reads_root for name in DATASETS if name != "digits")
    cfg = load_run_config(
        None,
        [f"data.root={tmp_path / 'my-images'}", "train.epochs=1", "train.max_steps=1", f"train.out_dir={tmp_path}"],
    )
    lines: list[str] = []
    train(cfg, log=lines.append)
    assert any("data.name=digits reads no folder" in line and "my-images is ignored" in line for line in lines)
