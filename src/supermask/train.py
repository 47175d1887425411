"""Training a run, read top to bottom (the engine it uses is :mod:`supermask.engine`).

``train(cfg)`` builds the data, the model (converted to a supermask search unless the method is
``dense``, which goes through the same code path with learned weights), the optimiser and the
schedule, then trains for ``cfg.train.epochs`` epochs, evaluating and checkpointing after each.
Under ``torchrun`` it runs DDP (gloo on CPU, nccl on GPU); only rank 0 writes.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from supermask.core.inspection import silent_outputs, sparsity_report
from supermask.core.layers import supermask_layers
from supermask.data import DATASETS
from supermask.engine.build import (  # noqa: F401  (cli and scripts reach them through this module)
    build_data,
    build_model,
    check_has_batches,
    export,
    load_run,
    masked_fraction,
    root_ignored,
    run_header,
)

# The engine's pieces that scripts and tests reach through this module, as before it was split.
from supermask.engine.epoch import (
    EpochRun,
    channels_last_input,  # noqa: E402, F401
    evaluate,
    evaluate_after,
    train_epoch,
)
from supermask.engine.optim import SGDW, build_optimizer, learning_rate  # noqa: E402, F401
from supermask.engine.records import check_same_precision, environment, run_record
from supermask.engine.rundir import (
    CONFIG,
    EXPORT,
    METRICS,
    RESULT,
    TASKS_STATE,
    TRAIN_STATE,
    RunLock,
    append_line,
    finished_result,
    prepare_run_dir,
    result_without_state,
)
from supermask.engine.step import StopRequest, execution
from supermask.engine.trackers import Trackers, flatten
from supermask.errors import (
    EXIT_RESUMABLE,
    RunInterrupted,
    SupermaskConfigError,
    TrainingError,
)
from supermask.fileio import atomic_write, atomic_writer, make_dirs, read_json, remove_temp_files
from supermask.precision import configured_device, precision_name, use_bf16, use_channels_last
from supermask.runconfig import RunConfig, to_yaml


def train(cfg: RunConfig, log: Any = print) -> dict[str, Any]:
    """Train one run; returns the final metrics (also written to ``<run dir>/result.json``)."""
    # --- processes: torchrun sets RANK/WORLD_SIZE/LOCAL_RANK ---------------------------------
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    master = rank == 0
    run_dir = cfg.run_dir()
    lock = RunLock(run_dir).acquire() if master else None  # first of all: one writer per run directory
    if lock is not None:
        remove_temp_files(run_dir)  # what a killed writer of this directory left (we are its only writer now)
    try:
        with execution(cfg):
            if cfg.data.tasks > 1:
                return _train_split(cfg, log, run_dir, world)
            state = prepare_run_dir(cfg, run_dir, world, writer=master)
            finished = finished_result(run_dir, state, cfg.train.epochs)
            if state is None and cfg.train.resume:
                finished = result_without_state(run_dir, TRAIN_STATE)
            if finished is not None:
                if master:
                    log(f"{run_dir} is finished already: its result is kept")
                return finished
            return _train(cfg, log, state, world, rank)
    finally:
        if lock is not None:
            lock.release()


def _train_split(cfg: RunConfig, log: Any, run_dir: Path, world: int) -> dict[str, Any]:
    """A run over tasks (a split or permuted data set): one mask per task (see :mod:`supermask.multitask`)."""
    from supermask.multitask import train_tasks

    if world > 1:
        raise TrainingError(
            "a run over tasks (data.split_tasks, data.permuted_tasks) runs in one process; start it without torchrun"
        )
    prepare_run_dir(cfg, run_dir, world)  # the lock is held; a different run there is refused
    if cfg.train.resume:
        finished = result_without_state(run_dir, TASKS_STATE)
        if finished is not None:
            log(f"{run_dir} is finished already: its result is kept")
            return finished
    state = None
    if cfg.train.resume and (run_dir / TASKS_STATE).is_file():
        try:
            state = torch.load(run_dir / TASKS_STATE, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise TrainingError(f"{run_dir / TASKS_STATE} cannot be read ({exc}); start again with overwrite") from exc
        if state["tasks_done"] >= cfg.data.tasks and (run_dir / RESULT).is_file():
            log(f"{run_dir} is finished already: its result is kept")
            result = read_json(run_dir / RESULT)
            if isinstance(result, dict):
                return result
    return train_tasks(cfg, log, state)


def _train(cfg: RunConfig, log: Any, state: dict[str, Any] | None, world: int, rank: int) -> dict[str, Any]:
    device = _start_processes(configured_device(cfg.train.device), world)
    master = rank == 0
    run_dir = cfg.run_dir()
    stop = StopRequest(cfg.train.time_limit, world)
    closing: list[Any] = []  # trackers opened: closed however the run ends
    try:
        # --- data, model, optimiser --------------------------------------------------------
        torch.manual_seed(cfg.train.seed)
        train_loader, test_loader, num_classes, in_channels, image_size = build_data(cfg, device, rank, world)
        model = build_model(cfg, num_classes, in_channels, image_size).to(device)
        channels_last = use_channels_last(cfg.train.channels_last, device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        optimizer = build_optimizer(cfg, model)
        check_has_batches(train_loader, cfg, world)
        steps_per_epoch = (
            len(train_loader) if cfg.train.max_steps is None else min(len(train_loader), cfg.train.max_steps)
        )
        total_steps = cfg.train.epochs * steps_per_epoch
        autocast = use_bf16(cfg.train.bf16, device)
        layers = [layer for _, layer in supermask_layers(model)]
        method = layers[0].method
        problem = method.schedule_problem(cfg.train.epochs, total_steps)
        if problem:
            raise SupermaskConfigError(problem)
        masked = masked_fraction(model)
        if master:
            header = run_header(cfg, model, train_loader, test_loader, steps_per_epoch, masked, device, autocast)
            _announce(cfg, method, header, log)

        # --- resume (prepare_run_dir checked the directory's run against this config) -------
        start_epoch, history = 0, []
        partial: dict[str, Any] | None = None  # an epoch stopped part-way: where, and its sums so far
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start_epoch, history = state["epoch"], state["metrics"]
            partial = state.get("partial")
            check_same_precision(cfg, run_dir, state, history, autocast, device)
            if master:
                at = f", step {partial['step']} of epoch {start_epoch + 1}" if partial else ""
                log(f"resuming {run_dir} from epoch {start_epoch}{at}")
        if master:
            _warn_silent_outputs(model, log)
            make_dirs(run_dir)
            atomic_write(run_dir / CONFIG, to_yaml(cfg), fsync=False)
            # The metrics file holds exactly the checkpointed epochs (a kill may have left one more).
            atomic_write(run_dir / METRICS, "".join(json.dumps(row) + "\n" for row in history), fsync=False)
        net: nn.Module = model
        if cfg.train.compile:
            net = torch.compile(net)  # type: ignore[assignment]
        if world > 1:
            net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
        trackers = Trackers(cfg.train.loggers, run_dir, run_dir.name) if master else None
        if trackers is not None:
            closing.append(trackers)
            trackers.hyperparameters(flatten(cfg.to_dict()))
        env = environment(device, world, autocast, channels_last)

        def snapshot(epochs_done: int, partial: dict[str, Any] | None = None) -> dict[str, Any]:
            """Everything the run needs to go on: after ``epochs_done`` epochs and, mid-epoch, ``partial``."""
            return {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epochs_done,
                "metrics": history,
                "config": cfg.to_dict(),
                "world_size": world,
                "threads": torch.get_num_threads(),
                **({"partial": partial} if partial is not None else {}),
            }

        # --- epochs ------------------------------------------------------------------------
        epoch_run = EpochRun(
            cfg,
            net,
            optimizer,
            method,
            layers,
            device,
            autocast,
            channels_last,
            num_classes,
            steps_per_epoch,
            total_steps,
            rank,
            on_log=trackers.step if trackers is not None else None,
            log_every=cfg.train.log_every,
        )
        stop.install()
        for epoch in range(start_epoch, cfg.train.epochs):

            def stopped(where: dict[str, Any], why: str, step: int, epoch: int = epoch) -> None:
                if master:
                    with atomic_writer(run_dir / TRAIN_STATE) as f:
                        torch.save(snapshot(epoch, where), f)
                raise RunInterrupted(
                    f"stopped ({why}) at step {step} of epoch {epoch + 1}/{cfg.train.epochs}; its whole state "
                    f"is in {run_dir / TRAIN_STATE}: run the same command again to resume it there "
                    f"(exit code {EXIT_RESUMABLE})"
                )

            # bernoulli sampling: the same draws on resume
            sums = train_epoch(epoch_run, train_loader, epoch, cfg.train.seed * 1000 + epoch, stop, partial, stopped)
            partial = None  # (a stop after an epoch's last step resumes straight into its end)
            method.on_epoch_end(layers, epoch + 1, cfg.train.epochs)
            test, diverged = evaluate_after(
                model, sums["train_loss"], functools.partial(evaluate, model, test_loader, device, autocast)
            )
            if diverged:
                _stop_diverged(diverged, epoch, history, run_dir)
            row = {
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
            if master:
                _record_epoch(cfg, run_dir, row, model, trackers, snapshot(epoch + 1), log)

        # --- the result ----------------------------------------------------------------------
        result = {
            **run_record(cfg, run_dir, history, device, world, autocast, channels_last),
            "accuracy": history[-1]["test_accuracy"] if history else None,
            "kept_fraction": sparsity_report(model)["converted"]["fraction"],
            "masked_fraction": masked,  # of ALL the model's weights: the rest stay dense (frozen or learned)
            "steps_per_epoch": steps_per_epoch,
        }
        if master:
            export(model, cfg, run_dir / EXPORT, precision_name(autocast), channels_last)
            atomic_write(run_dir / RESULT, json.dumps(result, indent=1))
        return result
    finally:
        for opened in closing:
            opened.close()
        stop.restore()
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _start_processes(device: torch.device, world: int) -> torch.device:
    """Under torchrun (``world`` > 1): this process's GPU and the process group (nccl on GPUs, gloo on CPUs)."""
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def _announce(cfg: RunConfig, method: Any, header: list[str], log: Any) -> None:
    """What the run is about to do, before its first step: the settings it chose, the header, and the
    settings it ignores."""
    if cfg.method_defaults:
        settings = ", ".join(f"{k}={v}" for k, v in cfg.method_defaults.items())
        log(f"method {method.name}: the paper's optimiser settings, as none were given: {settings}")
    if cfg.data.root and not DATASETS[cfg.data.name].reads_root:
        log(root_ignored(cfg.data.name, cfg.data.root))
    for line in header:
        log(line)
    same = method.same_as_another()
    if same:
        log(f"warning: {same}")
    if cfg.ignored_settings:
        settings = ", ".join(f"{k}={v}" for k, v in cfg.ignored_settings.items())
        log(
            f"note: method {method.name} over {method.config.weight_init} weights does not use {settings}: ignored "
            "(it changes neither network nor training)"
        )


def _warn_silent_outputs(model: nn.Module, log: Any) -> None:
    for row in silent_outputs(model):
        log(
            f"warning: {row['name']} keeps {row['kept']} of its {row['total']} weights: {row['silent']} of its "
            f"{row['outputs']} outputs have no kept weight and carry no signal (a global selection at a small k "
            "can starve a layer; see supermask.sparsity_report)"
        )


def _record_epoch(
    cfg: RunConfig,
    run_dir: Path,
    row: dict[str, Any],
    model: nn.Module,
    trackers: Trackers | None,
    state: dict[str, Any],
    log: Any,
) -> None:
    """An epoch done: its metrics line, the trackers, the checkpoint after it, and its log line."""
    append_line(run_dir / METRICS, row)
    if trackers is not None:
        numbers = {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and k != "epoch"}
        trackers.epoch(row["epoch"], {**numbers, "kept_fraction": sparsity_report(model)["converted"]["fraction"]})
    with atomic_writer(run_dir / TRAIN_STATE) as f:
        torch.save(state, f)
    log(
        f"epoch {row['epoch']}/{cfg.train.epochs}  loss {row['train_loss']:.4f}  "
        f"train acc {row['train_accuracy']:.4f}  test acc {row['test_accuracy']:.4f}  ({row['seconds']:.1f}s)"
    )


def _stop_diverged(diverged: str, epoch: int, history: list[dict[str, Any]], run_dir: Path) -> None:
    kept = (
        f"The last good checkpoint (after epoch {history[-1]['epoch']}) is kept in {run_dir}"
        if history
        else "No epoch had completed, so there is no checkpoint to keep"
    )
    raise TrainingError(
        f"{diverged} in epoch {epoch + 1}; stopped. {kept}. Lower optim.lr or add warm-up (optim.warmup_epochs)"
    )
