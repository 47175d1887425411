"""Tests of supermask.data.folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from supermask import data
from supermask.data import DataError
from tests.helpers.data import write_images


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


def test_image_extensions_in_any_case_are_read(tmp_path: Path) -> None:
    from supermask.data import ImageFolder
    from supermask.data.registry import DATASETS

    write_images(tmp_path / "img", splits=("train",))
    for i, path in enumerate(sorted((tmp_path / "img" / "train" / "red").iterdir())):
        path.rename(path.with_suffix([".PNG", ".Png", ".png"][i % 3]))  # cameras write IMG_0001.JPG
    folder = ImageFolder(tmp_path / "img" / "train", 8, False, DATASETS["imagenet"])
    assert len(folder) == 24 and folder.classes == ["blue", "red"]
