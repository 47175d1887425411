"""What each data set is (supermask.data.registry): shapes, statistics, sources and checksums."""

from __future__ import annotations

import re

import pytest

from supermask.data.registry import DATASET_NAMES, DATASETS, describe


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_every_data_set_is_described_consistently(name: str) -> None:
    info = DATASETS[name]
    assert len(info.mean) == len(info.std) == info.in_channels and all(s > 0 for s in info.std)
    for remote in (*info.files, *info.members):
        assert re.fullmatch(r"[0-9a-f]{32}", remote.md5), remote
        assert remote.unpacked_md5 is None or re.fullmatch(r"[0-9a-f]{32}", remote.unpacked_md5)
    assert info.reads_root == bool(info.files or info.members or info.folder)
    if info.urls:
        assert all(u.startswith(("https://", "http://")) and u.endswith("/") for u in info.urls)


def test_the_lossy_rebuild_is_always_labelled_as_such() -> None:
    assert describe("cifar10-jpeg75") == "CIFAR-10 (JPEG-75 rebuild)"
    assert describe("cifar10") == "cifar10" and describe("mnist") == "mnist"
    assert not DATASETS["cifar10-jpeg75"].urls  # never downloaded: it is read from data.root only
    assert not DATASETS["digits"].reads_root  # ships with scikit-learn
