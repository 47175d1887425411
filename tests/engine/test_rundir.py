"""The run directory's states, without training (issue 26, item 5): fresh, resumable, finished, and
each refusal (another run's config, recorded epochs without a state, a damaged state, a second writer)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from supermask import cli
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
from supermask.train import train
from tests.helpers.runs import QUIET, cfg_for, run_cli, stop_after_first_epoch


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

    from supermask.engine import rundir

    path = tmp_path / "metrics.jsonl"
    rundir.append_line(path, {"epoch": 1})
    real = os.write
    monkeypatch.setattr(rundir.os, "write", lambda fd, data: real(fd, data[:5]))  # the disk fills mid-line
    with pytest.raises(StorageError, match="metrics.jsonl"):
        rundir.append_line(path, {"epoch": 2, "loss": 0.5})
    assert path.read_text() == '{"epoch": 1}\n'


@pytest.mark.slow
def test_a_second_writer_is_refused_at_once_and_the_first_is_unharmed(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    with RunLock(cfg.run_dir()):  # another process's run, as far as the CLI below can tell
        busy = run_cli("train", f"train.out_dir={tmp_path}", "train.run_name=r", cwd=tmp_path)
        with pytest.raises(RunBusyError, match="in use by another supermask process"):
            train(cfg, **QUIET)
    assert busy.returncode == cli.EXIT_BUSY
    assert busy.stderr.count("\n") == 1 and "in use by another supermask process" in busy.stderr
    assert not (cfg.run_dir() / "config.yaml").exists()  # the refused run wrote nothing
    result = train(cfg, **QUIET)  # the lock is released with its holder
    assert len((cfg.run_dir() / "metrics.jsonl").read_text().splitlines()) == 2 and result["accuracy"] > 0.5


def test_resume_false_never_replaces_a_run(tmp_path: Path) -> None:
    first = train(cfg_for(tmp_path), **QUIET)
    with pytest.raises(TrainingError, match="holds a finished run and train.resume=false"):
        train(cfg_for(tmp_path, "train.resume=false"), **QUIET)
    assert json.loads((tmp_path / "r" / "result.json").read_text())["accuracy"] == first["accuracy"]
    with pytest.raises(TrainingError, match=r"different config \(supermask.k: 0.5 -> 0.3\)"):
        train(cfg_for(tmp_path, "supermask.k=0.3"), **QUIET)
    again = train(cfg_for(tmp_path, "supermask.k=0.3", "train.resume=false", "train.overwrite=true"), **QUIET)
    assert again["k"] == 0.3 and json.loads((tmp_path / "r" / "result.json").read_text())["k"] == 0.3


def test_bookkeeping_keys_do_not_block_a_resume(tmp_path: Path) -> None:
    train(cfg_for(tmp_path), **QUIET)
    again = train(cfg_for(tmp_path, "train.progress=none", "data.eval_batch_size=7", "train.threads=1"), **QUIET)
    assert again["epochs"] == 2


def test_world_size_change_is_refused_unless_asked_for(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, "train.epochs=3")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, log=stop_after_first_epoch)
    with pytest.raises(TrainingError, match=r"trained with 1 process\(es\) \(global batch 64\); resuming with 2"):
        prepare_run_dir(cfg, cfg.run_dir(), world=2)
    state = prepare_run_dir(cfg_for(tmp_path, "train.epochs=3", "train.allow_world_size_change=true"), cfg.run_dir(), 2)
    assert state is not None and state["epoch"] == 1


@pytest.mark.parametrize("split", [1, 2])
def test_a_run_without_its_training_state_is_kept_never_trained_over(tmp_path: Path, split: int) -> None:
    """A run directory copied from another machine (or committed as a summary) has no training state:
    a finished one is kept as it is, an unfinished one is refused, and neither loses its metrics."""
    items = ["train.epochs=3", f"data.split_tasks={split}"]
    state_file = "train_state.pt" if split == 1 else "tasks_state.pt"
    finished = train(cfg_for(tmp_path, *items), **QUIET)
    run = tmp_path / "r"
    (run / state_file).unlink()
    metrics, result = (run / "metrics.jsonl").read_text(), (run / "result.json").read_text()
    again = train(cfg_for(tmp_path, *items), **QUIET)
    assert again == finished and (run / "metrics.jsonl").read_text() == metrics
    assert (run / "result.json").read_text() == result

    (run / "result.json").unlink()  # an unfinished run: recorded epochs, no state to continue from
    with pytest.raises(TrainingError, match=r"holds \d+ recorded epoch\(s\) but no " + state_file.replace(".", r"\.")):
        train(cfg_for(tmp_path, *items), **QUIET)
    assert (run / "metrics.jsonl").read_text() == metrics
    again = train(cfg_for(tmp_path, *items, "train.resume=false", "train.overwrite=true"), **QUIET)
    assert again["epochs"] == 3 and (run / state_file).is_file()


def test_resume_refuses_a_different_config(tmp_path: Path) -> None:
    cfg = load_run_config(None, [f"train.out_dir={tmp_path}", "train.epochs=1", "train.run_name=r"])
    train(cfg, log=lambda *_: None)
    cfg2 = load_run_config(None, [f"train.out_dir={tmp_path}", "train.epochs=2", "train.run_name=r"])
    with pytest.raises(TrainingError, match="different config"):
        train(cfg2, log=lambda *_: None)
