"""Experiment trackers (issue 24, item 6): train.loggers writes the hyper-parameters, the training loss and
learning rate every train.log_every steps, and each epoch's metrics with the kept fraction, to csv,
tensorboard, mlflow (a file store) and wandb (offline)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from supermask import cli
from supermask.errors import SupermaskConfigError
from supermask.runconfig import load_run_config

RUN = ["train", "train.epochs=2", "train.max_steps=10", "train.log_every=5", "train.bf16=false"]


def run_dir(tmp_path: Path) -> Path:
    return next(p.parent for p in tmp_path.glob("*/result.json"))


def test_csv_by_default_every_log_every_steps(tmp_path: Path) -> None:
    assert cli.main([*RUN, f"train.out_dir={tmp_path}"]) == 0
    folder = run_dir(tmp_path)
    steps = list(csv.DictReader(open(folder / "steps.csv")))
    assert [int(r["step"]) for r in steps] == [5, 10, 15, 20]  # the run's steps: 2 epochs of 10
    assert all(float(r["train/loss"]) > 0 and float(r["lr"]) > 0 for r in steps)
    epochs = list(csv.DictReader(open(folder / "epochs.csv")))
    assert [int(r["epoch"]) for r in epochs] == [1, 2]
    assert all(abs(float(r["kept_fraction"]) - 0.5) < 0.01 and 0 <= float(r["test_accuracy"]) <= 1 for r in epochs)


def test_tensorboard_mlflow_and_wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    argv = [*RUN, f"train.out_dir={tmp_path}", "train.loggers=[csv, tensorboard, mlflow, wandb]"]
    assert cli.main(argv) == 0
    folder = run_dir(tmp_path)
    assert list((folder / "tensorboard").glob("events.out.tfevents.*"))
    metrics = {p.name for p in (folder / "mlruns").rglob("metrics/*")}
    assert {"train_loss", "lr", "epoch_kept_fraction", "epoch_test_accuracy"} <= metrics
    params = {p.name for p in (folder / "mlruns").rglob("params/*")}
    assert {"supermask.k", "optim.lr", "train.seed"} <= params
    assert list((folder / "wandb").glob("offline-run-*"))


def test_a_tracker_unknown_or_not_installed_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SupermaskConfigError, match="'tensorbored' is not a tracker; choose from csv"):
        load_run_config(None, ["train.loggers=[tensorbored]"])
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(SupermaskConfigError, match="wandb needs the wandb package: pip install wandb"):
        load_run_config(None, ["train.loggers=[wandb]"])
    with pytest.raises(SupermaskConfigError, match="must be a list of names"):
        load_run_config(None, ["train.loggers=csv"])


def test_split_task_runs_feed_the_trackers_too(tmp_path: Path) -> None:
    argv = ["train", "data.split_tasks=5", "train.epochs=2", "train.max_steps=10", "train.log_every=2",
            "train.bf16=false", f"train.out_dir={tmp_path}"]  # fmt: skip
    assert cli.main(argv) == 0
    folder = run_dir(tmp_path)
    epochs = list(csv.DictReader(open(folder / "epochs.csv")))
    assert [int(r["epoch"]) for r in epochs] == list(range(1, 11))  # 5 tasks x 2 epochs, counted over the run
    assert sorted({float(r["task"]) for r in epochs}) == [0.0, 1.0, 2.0, 3.0, 4.0]
    steps = [int(r["step"]) for r in csv.DictReader(open(folder / "steps.csv"))]
    assert steps == sorted(set(steps)) and len(steps) >= 10  # increasing over the tasks
