"""Tests of supermask.fileio."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import supermask
from supermask import cli
from supermask.core.config import SupermaskConfig
from supermask.errors import StorageError
from supermask.train import train
from tests.helpers.checkpoint import fresh
from tests.helpers.runs import QUIET, cfg_for


def test_files_follow_the_umask(tmp_path: Path) -> None:

    old = os.umask(0o022)
    try:
        model = supermask.to_supermask(fresh(), SupermaskConfig(seed=1))
        supermask.save(model, tmp_path / "ck")
    finally:
        os.umask(old)
    for f in (tmp_path / "ck").iterdir():
        assert f.stat().st_mode & 0o777 == 0o644, f


def test_disk_full_names_the_path_keeps_the_last_checkpoint_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import supermask.fileio as fileio

    real = fileio._open_new
    writes = {"n": 0}

    def full_disk(path: Path):  # type: ignore[no-untyped-def]
        f = real(path)
        if path.name.startswith(f"{fileio.TEMP_PREFIX}train_state.pt"):
            writes["n"] += 1
            if writes["n"] == 2:  # epoch 2's checkpoint

                def fail(data: bytes) -> int:
                    raise OSError(28, "No space left on device")

                f.write = fail  # type: ignore[method-assign]
        return f

    monkeypatch.setattr(fileio, "_open_new", full_disk)
    with pytest.raises(StorageError, match=r"cannot write .*train_state.pt: No space left on device"):
        train(cfg_for(tmp_path, "train.epochs=3"), **QUIET)
    assert torch.load(tmp_path / "r" / "train_state.pt", weights_only=True)["epoch"] == 1
    assert not [p.name for p in (tmp_path / "r").iterdir() if p.name.startswith(fileio.TEMP_PREFIX)]
    # a writer killed mid-write (no cleanup) leaves its temporary file; the next run of the directory removes it
    (tmp_path / "r" / f"{fileio.TEMP_PREFIX}train_state.pt.dead").write_bytes(b"half")
    monkeypatch.setattr(fileio, "_open_new", real)
    train(cfg_for(tmp_path, "train.epochs=3"), **QUIET)
    assert not [p.name for p in (tmp_path / "r").iterdir() if p.name.startswith(fileio.TEMP_PREFIX)]


def test_an_unwritable_output_is_one_line_naming_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("not a folder")
    assert cli.main(["train", f"train.out_dir={tmp_path / 'file' / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "file" / "runs") in err
