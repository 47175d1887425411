"""The run directory's states, without training (issue 26, item 5): fresh, resumable, finished, and
each refusal (another run's config, recorded epochs without a state, a damaged state, a second writer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from supermask.engine.rundir import (
    CONFIG,
    METRICS,
    RESULT,
    TRAIN_STATE,
    RunLock,
    finished_result,
    prepare_run_dir,
    result_without_state,
)
from supermask.errors import RunBusyError, StorageError, TrainingError
from supermask.runconfig import load_run_config, to_yaml


def _cfg(tmp_path: Path, *items: str):  # type: ignore[no-untyped-def]
    return load_run_config(None, [f"train.out_dir={tmp_path}", "train.run_name=run", *items])


def _state(cfg, epoch: int) -> dict:  # type: ignore[no-untyped-def]
    return {"model": {}, "optimizer": {}, "epoch": epoch, "metrics": [], "config": cfg.to_dict(), "world_size": 1}


def test_an_empty_directory_is_fresh(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    assert prepare_run_dir(cfg, cfg.run_dir(), 1) is None
    assert result_without_state(cfg.run_dir(), TRAIN_STATE) is None


def test_a_saved_state_of_the_same_experiment_resumes_and_a_finished_one_is_kept(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "train.epochs=3")
    d = cfg.run_dir()
    d.mkdir(parents=True)
    torch.save(_state(cfg, 2), d / TRAIN_STATE)
    state = prepare_run_dir(_cfg(tmp_path, "train.epochs=3", "train.threads=1"), d, 1)  # bookkeeping key: same run
    assert state is not None and state["epoch"] == 2
    assert finished_result(d, state, 3) is None  # epochs left
    torch.save(_state(cfg, 3), d / TRAIN_STATE)
    (d / RESULT).write_text(json.dumps({"accuracy": 0.5}))
    assert finished_result(d, prepare_run_dir(cfg, d, 1), 3) == {"accuracy": 0.5}


def test_another_experiment_in_the_directory_is_refused_with_the_keys_that_differ(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    cfg.run_dir().mkdir(parents=True)
    (cfg.run_dir() / CONFIG).write_text(to_yaml(cfg))
    with pytest.raises(TrainingError, match=r"supermask.k: 0.5 -> 0.3"):
        prepare_run_dir(_cfg(tmp_path, "supermask.k=0.3"), cfg.run_dir(), 1)


def test_recorded_epochs_without_a_state_are_never_trained_over(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    d = cfg.run_dir()
    d.mkdir(parents=True)
    (d / CONFIG).write_text(to_yaml(cfg))
    (d / METRICS).write_text('{"epoch": 1}\n{"epoch": 2}\n')
    assert prepare_run_dir(cfg, d, 1) is None
    with pytest.raises(TrainingError, match="holds 2 recorded epoch"):
        result_without_state(d, TRAIN_STATE)
    (d / RESULT).write_text(json.dumps({"accuracy": 0.9}))  # a committed summary: kept as it is
    assert result_without_state(d, TRAIN_STATE) == {"accuracy": 0.9}


@pytest.mark.parametrize("damage", [b"", b"not a torch file", b"PK\x03\x04 truncated"])
def test_a_damaged_state_is_refused_not_trained_over(damage: bytes, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    cfg.run_dir().mkdir(parents=True)
    (cfg.run_dir() / TRAIN_STATE).write_bytes(damage)
    with pytest.raises(TrainingError, match="cannot be read"):
        prepare_run_dir(cfg, cfg.run_dir(), 1)


def test_overwrite_replaces_and_resume_false_refuses(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    d = cfg.run_dir()
    d.mkdir(parents=True)
    (d / METRICS).write_text("{}\n")
    with pytest.raises(TrainingError, match="train.resume=false"):
        prepare_run_dir(_cfg(tmp_path, "train.resume=false"), d, 1)
    assert prepare_run_dir(_cfg(tmp_path, "train.resume=false", "train.overwrite=true"), d, 1) is None
    assert not (d / METRICS).exists()


def test_one_writer_per_directory(tmp_path: Path) -> None:
    with RunLock(tmp_path / "run"):
        with pytest.raises(RunBusyError, match="in use by another supermask process"):
            RunLock(tmp_path / "run").acquire()
    RunLock(tmp_path / "run").acquire().release()  # released with its holder


def test_a_world_size_change_is_refused_unless_allowed(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    cfg.run_dir().mkdir(parents=True)
    torch.save(_state(cfg, 1), cfg.run_dir() / TRAIN_STATE)
    with pytest.raises(TrainingError, match="trained with 1 process"):
        prepare_run_dir(cfg, cfg.run_dir(), 2)
    assert prepare_run_dir(_cfg(tmp_path, "train.allow_world_size_change=true"), cfg.run_dir(), 2) is not None


def test_a_metrics_line_is_appended_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from supermask.engine import rundir

    path = tmp_path / "metrics.jsonl"
    rundir.append_line(path, {"epoch": 1})
    real = os.write
    monkeypatch.setattr(rundir.os, "write", lambda fd, data: real(fd, data[:5]))  # the disk fills mid-line
    with pytest.raises(StorageError, match="metrics.jsonl"):
        rundir.append_line(path, {"epoch": 2, "loss": 0.5})
    assert path.read_text() == '{"epoch": 1}\n'
