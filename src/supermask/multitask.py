"""Training one mask per task (SupSup's SplitMNIST and PermutedMNIST layouts), read top to bottom.

``data.split_tasks=N`` cuts a small data set's classes into N tasks of consecutive classes (MNIST into
5 tasks: 0-1, 2-3, ...). The model's output layer has one unit per class of a task and is shared: every
task trains its own mask over every layer, the output layer included, with task-local labels (the class
minus the task's first class), so in effect each task has its own head. ``data.permuted_tasks=N`` makes N
tasks of the whole data set instead, each with the pixels of every image in a fixed random order of its
own (task t's permutation is drawn from ``(train.seed, t)``; every task is permuted), all classes in each
task; a task's images are permuted when the task is trained or tested, one task's copy at a time. Tasks
train one after the other, each for ``train.epochs`` epochs with its own optimiser and learning-rate
schedule; training a task never changes another task's mask. After the last task the run reports, on each task's test set, the accuracy
with the task given and how often :func:`supermask.infer_task` finds the task of a batch of
``data.eval_batch_size`` of its test inputs (and the accuracy when the inferred task's mask is used).
A run resumes at the first unfinished task. No DDP: one process.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from supermask.core.inspection import sparsity_report
from supermask.core.layers import supermask_layers
from supermask.core.tasks import infer_task, set_task
from supermask.data import DATASETS, TensorLoader, first_examples, load_arrays
from supermask.engine.build import build_model, check_has_batches, export
from supermask.engine.epoch import EpochRun, evaluate, evaluate_after, train_epoch
from supermask.engine.optim import build_optimizer
from supermask.engine.records import check_same_precision, environment, run_record
from supermask.engine.rundir import EXPORT, METRICS, RESULT, TASKS_STATE, append_line
from supermask.engine.trackers import Trackers, flatten
from supermask.errors import SupermaskConfigError, TrainingError
from supermask.fileio import atomic_write, atomic_writer, make_dirs
from supermask.precision import configured_device, precision_name, use_bf16
from supermask.runconfig import RunConfig, to_yaml


def task_classes(num_classes: int, tasks: int) -> int:
    """Classes per task; the classes must split evenly."""
    if num_classes % tasks:
        raise SupermaskConfigError(
            f"data.split_tasks={tasks} does not divide the data set's {num_classes} classes evenly"
        )
    return num_classes // tasks


def pixel_permutation(seed: int, task: int, pixels: int) -> np.ndarray:
    """Task ``task``'s order of an image's ``pixels`` (the same for every channel) in a run of ``seed``."""
    return np.random.default_rng([seed, task]).permutation(pixels)


def permute_pixels(x: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Images ``x`` (N, C, H, W) with the pixels of each channel in ``order`` (a permutation of H * W)."""
    n, c, h, w = x.shape
    return np.ascontiguousarray(x.reshape(n, c, h * w)[:, :, order]).reshape(n, c, h, w)


class TaskLoaders:
    """The (train, test) loaders of each task, ``loaders[t]``; a permuted task's are made when asked for
    (a permuted copy of the data set per task at once would not fit in memory for hundreds of tasks)."""

    def __init__(self, cfg: RunConfig, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.info = DATASETS[cfg.data.name]
        self.arrays = load_arrays(cfg.data.name, cfg.data.root)
        self.arrays["train"] = first_examples(*self.arrays["train"], cfg.data.train_examples)
        permuted = cfg.data.permuted_tasks > 1
        self.classes_per_task = self.info.num_classes if permuted else task_classes(self.info.num_classes, len(self))
        self._split = None if permuted else [self._make(t) for t in range(len(self))]  # small: made at once

    def __len__(self) -> int:
        return self.cfg.data.tasks

    def __getitem__(self, task: int) -> tuple[TensorLoader, TensorLoader]:
        if not 0 <= task < len(self):
            raise IndexError(task)
        train, test = self._split[task] if self._split is not None else self._make(task)
        return train, test

    def test_loaders(self) -> Iterator[TensorLoader]:
        """Each task's test loader in turn (a permuted task's training images are not copied for it)."""
        for task in range(len(self)):
            yield self._split[task][1] if self._split is not None else self._make(task, splits=("test",))[0]

    def _make(self, task: int, splits: tuple[str, ...] = ("train", "test")) -> tuple[TensorLoader, ...]:
        cfg, per_task = self.cfg, self.classes_per_task
        made = []
        for split in splits:
            train = split == "train"
            x, y = self.arrays[split]
            if cfg.data.permuted_tasks > 1:
                x = permute_pixels(x, pixel_permutation(cfg.train.seed, task, x.shape[2] * x.shape[3]))
            else:
                keep = (y >= task * per_task) & (y < (task + 1) * per_task)
                x, y = x[keep], y[keep] - task * per_task
            made.append(
                TensorLoader(
                    x,
                    y,
                    self.info,
                    cfg.data.batch_size if train else cfg.data.eval_batch_size,
                    train=train,
                    device=self.device,
                    seed=cfg.train.seed,
                    standardize=cfg.data.standardize,
                    shuffle=cfg.data.shuffle,
                    augment=cfg.data.augment,
                )
            )
        return tuple(made)


def train_tasks(cfg: RunConfig, log: Any, state: dict[str, Any] | None) -> dict[str, Any]:
    """Train every task of a split data set in turn; returns (and writes) the result. Called by
    :func:`supermask.train.train` under the run's lock."""

    device = configured_device(cfg.train.device)
    run_dir = cfg.run_dir()
    torch.manual_seed(cfg.train.seed)
    loaders = TaskLoaders(cfg, device)
    per_task, info = loaders.classes_per_task, loaders.info
    model = build_model(cfg, per_task, info.in_channels, info.image_size).to(device)
    autocast = use_bf16(cfg.train.bf16, device)  # the convolutions and matrix products; scores stay fp32
    done, history = 0, []
    if state is not None:
        model.load_state_dict(state["model"])
        done, history = state["tasks_done"], state["metrics"]
        check_same_precision(cfg, run_dir, state, history, autocast, device)
        log(f"resuming {run_dir} after task {done - 1}")
    make_dirs(run_dir)
    atomic_write(run_dir / "config.yaml", to_yaml(cfg), fsync=False)
    atomic_write(run_dir / METRICS, "".join(json.dumps(row) + "\n" for row in history), fsync=False)
    layers = [layer for _, layer in supermask_layers(model)]
    method = layers[0].method
    env = environment(device, 1, autocast, False)
    trackers = Trackers(cfg.train.loggers, run_dir, run_dir.name)
    try:
        trackers.hyperparameters(flatten(cfg.to_dict()))
        _train_each_task(
            cfg, log, model, loaders, per_task, done, history, layers, method, device, autocast, env, trackers
        )
    finally:
        trackers.close()
    return _result(cfg, model, loaders, per_task, device, autocast, history, run_dir)


def _train_each_task(
    cfg: RunConfig,
    log: Any,
    model: Any,
    loaders: TaskLoaders,
    per_task: int,
    done: int,
    history: list[dict[str, Any]],
    layers: list[Any],
    method: Any,
    device: torch.device,
    autocast: bool,
    env: dict[str, Any],
    trackers: Trackers,
) -> None:
    """Tasks ``done``.. in turn, each with its own optimiser over its own scores, through the single runs'
    epoch loop; metrics and trackers get every epoch (trackers count steps and epochs over all tasks)."""
    run_dir = cfg.run_dir()
    for task in range(done, cfg.data.tasks):
        set_task(model, task)
        optimizer = build_optimizer(cfg, model)  # this task's scores (and what else trains)
        train_loader, test_loader = loaders[task]
        check_has_batches(train_loader, cfg, what=f"task {task}'s training data")
        steps = len(train_loader) if cfg.train.max_steps is None else min(len(train_loader), cfg.train.max_steps)
        first = task * cfg.train.epochs * steps  # the run's step count before this task

        def log_step(step: int, values: dict[str, float], first: int = first, task: int = task) -> None:
            trackers.step(first + step, {**values, "task": task})

        run = EpochRun(
            cfg, model, optimizer, method, layers, device, autocast, False, per_task, steps, cfg.train.epochs * steps,
            on_log=log_step, log_every=cfg.train.log_every,
        )  # fmt: skip
        for epoch in range(cfg.train.epochs):  # the single runs' epoch loop, this task's seed and loader
            sums = train_epoch(run, train_loader, epoch, cfg.train.seed * 1000 + task * 100 + epoch)
            method.on_epoch_end(layers, epoch + 1, cfg.train.epochs)
            test, diverged = evaluate_after(
                model, sums["train_loss"], functools.partial(evaluate, model, test_loader, device, autocast)
            )
            if diverged:
                raise TrainingError(
                    f"{diverged} in task {task}, epoch {epoch + 1}; stopped (tasks 0..{task - 1} are kept in "
                    f"{run_dir}). Lower optim.lr"
                )
            row = {
                "task": task,
                "epoch": epoch + 1,
                "lr": sums["lr"],
                "train_loss": sums["train_loss"],
                "train_accuracy": sums["train_accuracy"],
                "test_loss": test["loss"],
                "test_accuracy": test["accuracy"],
                "seconds": sums["seconds"],
                **env,
            }
            history.append(row)
            append_line(run_dir / METRICS, row)  # a full disk is a StorageError naming the file
            numbers = {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and k != "epoch"}
            kept = sparsity_report(model)["converted"]["fraction"]
            trackers.epoch(task * cfg.train.epochs + epoch + 1, {**numbers, "kept_fraction": kept})
            log(f"task {task} epoch {epoch + 1}/{cfg.train.epochs}  test acc {test['accuracy']:.4f}")
        snapshot = {"model": model.state_dict(), "tasks_done": task + 1, "metrics": history, "config": cfg.to_dict()}
        with atomic_writer(run_dir / TASKS_STATE) as f:
            torch.save(snapshot, f)


def _result(
    cfg: RunConfig,
    model: Any,
    loaders: TaskLoaders,
    per_task: int,
    device: torch.device,
    autocast: bool,
    history: list[dict[str, Any]],
    run_dir: Any,
) -> dict[str, Any]:
    """Every task's test accuracy with its own mask, the run's record, written as result.json."""
    result = _evaluate_tasks(model, loaders.test_loaders(), device, evaluate, autocast)
    kept = []
    for task in range(cfg.data.tasks):
        set_task(model, task)
        kept.append(sparsity_report(model)["converted"]["fraction"])
    set_task(model, 0)
    record = run_record(
        cfg, run_dir, [{**row, "epoch": i + 1} for i, row in enumerate(history)], device, 1, autocast, False
    )
    result = {
        **record,
        **result,
        "tasks": cfg.data.tasks,
        "classes_per_task": per_task,
        "kept_fraction": sum(kept) / len(kept),  # the mean over tasks
    }
    export(model, cfg, run_dir / EXPORT, precision_name(autocast))
    atomic_write(run_dir / RESULT, json.dumps(result, indent=1))
    return result


def _evaluate_tasks(
    model: nn.Module, test_loaders: Iterable[Any], device: torch.device, evaluate: Any, autocast: bool = False
) -> dict[str, Any]:
    """Accuracy per task with the task given; task inference per test batch; accuracy with the inferred task."""
    given, right, batches, unknown_correct, examples = [], 0, 0, 0, 0
    for task, test_loader in enumerate(test_loaders):
        set_task(model, task)
        given.append(evaluate(model, test_loader, device, autocast)["accuracy"])
        for x, y in test_loader:
            guess = infer_task(model, x)
            right += guess == task
            batches += 1
            set_task(model, guess)
            model.eval()
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                unknown_correct += int((model(x).argmax(1) == y).sum()) if guess == task else 0
            examples += len(y)
    set_task(model, 0)
    return {
        "accuracy": sum(given) / len(given),  # the mean over tasks, each with its task given
        "task_accuracy": given,
        "task_inference_accuracy": right / max(1, batches),
        "task_inference_batches": batches,
        "accuracy_task_unknown": unknown_correct / max(1, examples),
    }
