"""Helpers of the data tests: a fake CIFAR-10 archive and its members, an image folder of one's own."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from supermask import data
from supermask.data import DatasetInfo, RemoteFile


def fake_cifar_members() -> tuple[RemoteFile, ...]:
    """The md5 of each file of the fake archive (so that a test can register the fake as a data set)."""
    with tarfile.open(fileobj=io.BytesIO(fake_cifar_archive())) as tar:
        return tuple(
            RemoteFile(m.name.split("/")[-1], hashlib.md5(tar.extractfile(m).read()).hexdigest())  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        )


def register_fake_cifar10(monkeypatch: pytest.MonkeyPatch, **changes: object) -> None:
    base = data.DATASETS["cifar10"]
    fields = dict(files=base.files, members=fake_cifar_members(), **changes)
    monkeypatch.setitem(data.DATASETS, "cifar10", DatasetInfo(10, 3, 32, base.mean, base.std, True, **fields))  # type: ignore[arg-type]


def fake_cifar_archive() -> bytes:
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


def write_images(
    root: Path, splits: tuple[str, ...] = ("train", "val"), classes: tuple[str, ...] = ("red", "blue")
) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in splits:
        for c, cls in enumerate(classes):
            (root / split / cls).mkdir(parents=True)
            for i in range(12):
                arr = rng.integers(0, 60, (10, 12, 3), dtype=np.uint8)
                arr[..., 0 if c == 0 else 2] += 180  # a class is a colour: learnable in a few steps
                Image.fromarray(arr).save(root / split / cls / f"{i}.png")
