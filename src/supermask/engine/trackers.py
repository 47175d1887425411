"""Experiment trackers (``train.loggers``): where a run's numbers go besides ``metrics.jsonl``.

``csv`` (no dependency: ``steps.csv``, per logged step, and ``epochs.csv`` in the run directory),
``tensorboard`` (``<run dir>/tensorboard``), ``wandb`` (its own settings and ``WANDB_MODE``; offline
writes under the run directory) and ``mlflow`` (its tracking URI, default a file store ``<run
dir>/mlruns``). Each gets the hyper-parameters once (the resolved config, flattened), the training loss
and learning rate every ``train.log_every`` steps (the loss averaged over them) and every epoch's
metrics with the kept fraction. A tracker that is not installed is a config error before the run starts.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from supermask.engine.rundir import append_text
from supermask.runconfig import check_trackers


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}``; lists and None as JSON text."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
    return out


class Tracker:
    """One destination; the defaults do nothing."""

    def hyperparameters(self, values: dict[str, Any]) -> None:
        """The flattened resolved config, once at the start."""

    def step(self, step: int, values: dict[str, float]) -> None:
        """``train/loss`` and ``lr`` at optimiser step ``step`` (counted over the whole run)."""

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        """An epoch's metrics (its number counts from 1)."""

    def close(self) -> None:
        """Flush and release."""


class CsvTracker(Tracker):
    """``steps.csv`` and ``epochs.csv`` in the run directory, appended (a resumed run goes on in them)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def _append(self, name: str, row: dict[str, Any]) -> None:
        """One row (and the header, for a new file) appended whole or not at all."""
        path = self.run_dir / name
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(row))
        if not path.exists():
            writer.writeheader()
        writer.writerow(row)
        append_text(path, text.getvalue())

    def step(self, step: int, values: dict[str, float]) -> None:
        self._append("steps.csv", {"step": step, **values})

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        self._append("epochs.csv", {"epoch": epoch, **values})


class TensorBoardTracker(Tracker):
    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def hyperparameters(self, values: dict[str, Any]) -> None:
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in values.items()))

    def step(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, epoch)

    def close(self) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    def __init__(self, run_dir: Path, name: str) -> None:
        import wandb

        self.wandb = wandb
        self.run = wandb.init(dir=str(run_dir), name=name, id=_stable_id(run_dir), resume="allow")

    def hyperparameters(self, values: dict[str, Any]) -> None:
        self.run.config.update(values, allow_val_change=True)

    def step(self, step: int, values: dict[str, float]) -> None:
        self.run.log({**values, "step": step})

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        self.run.log({f"epoch/{k}": v for k, v in values.items()} | {"epoch": epoch})

    def close(self) -> None:
        self.run.finish()


class MlflowTracker(Tracker):
    def __init__(self, run_dir: Path, name: str) -> None:
        import mlflow

        self.mlflow = mlflow
        if _default_uri():  # no MLFLOW_TRACKING_URI: a file store in the run directory (MLflow 3 asks for
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # this consent to use one)
            mlflow.set_tracking_uri((run_dir / "mlruns").resolve().as_uri())
        self.run = mlflow.start_run(run_name=name)

    def hyperparameters(self, values: dict[str, Any]) -> None:
        self.mlflow.log_params({k: str(v)[:500] for k, v in values.items()})

    def step(self, step: int, values: dict[str, float]) -> None:
        self.mlflow.log_metrics({k.replace("/", "_"): v for k, v in values.items()}, step=step)

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        self.mlflow.log_metrics({f"epoch_{k}": v for k, v in values.items()}, step=epoch)

    def close(self) -> None:
        self.mlflow.end_run()


def _default_uri() -> bool:
    return not os.environ.get("MLFLOW_TRACKING_URI")


def _stable_id(run_dir: Path) -> str:
    """The same wandb run id for the same run directory: a resumed run continues its wandb run."""
    import hashlib

    return hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]


class Trackers(Tracker):
    """Every tracker of ``train.loggers`` as one."""

    def __init__(self, names: list[str], run_dir: Path, run_name: str) -> None:
        check_trackers(names)
        made: dict[str, Any] = {
            "csv": lambda: CsvTracker(run_dir),
            "tensorboard": lambda: TensorBoardTracker(run_dir),
            "wandb": lambda: WandbTracker(run_dir, run_name),
            "mlflow": lambda: MlflowTracker(run_dir, run_name),
        }
        self.trackers: list[Tracker] = [made[name]() for name in names]

    def hyperparameters(self, values: dict[str, Any]) -> None:
        for t in self.trackers:
            t.hyperparameters(values)

    def step(self, step: int, values: dict[str, float]) -> None:
        for t in self.trackers:
            t.step(step, values)

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        for t in self.trackers:
            t.epoch(epoch, values)

    def close(self) -> None:
        for t in self.trackers:
            t.close()
