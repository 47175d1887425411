"""Tests of supermask.data.download."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from supermask import data
from supermask.data import DataError, DatasetInfo, RemoteFile
from tests.helpers.data import fake_cifar_archive, fake_cifar_members


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "served"
    root.mkdir()
    (root / "cifar-10-python.tar.gz").write_bytes(fake_cifar_archive())

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
    blob = fake_cifar_archive()
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
        members=fake_cifar_members(),
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
