"""The training engine: one function, read top to bottom.

``train(cfg)`` builds the data, the model (converted to a supermask search unless the method is
``dense``, which goes through the same code path with learned weights), the optimiser and the
schedule, then trains for ``cfg.train.epochs`` epochs, evaluating and checkpointing after each.
Under ``torchrun`` it runs DDP (gloo on CPU, nccl on GPU); only rank 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from supermask import models
from supermask.core import checkpoint
from supermask.core.convert import merge, silent_outputs, sparsity_report, supermask_layers, to_supermask
from supermask.core.methods import method_class
from supermask.data import DATASETS, build_folder_loaders, build_tensor_loaders, describe
from supermask.errors import (
    EXIT_RESUMABLE,
    DataError,
    NonFiniteScoresError,
    RunBusyError,
    RunInterrupted,
    StorageError,
    SupermaskConfigError,
    SupermaskError,
    TrainingError,
)
from supermask.fileio import atomic_write, atomic_writer, make_dirs, read_json, remove_temp_files
from supermask.precision import configured_device, precision_name, use_bf16, use_channels_last
from supermask.runconfig import RunConfig, experiment_key, from_dict, read_yaml_file, to_yaml, trust_model

TRAIN_STATE = "train_state.pt"
METRICS = "metrics.jsonl"
RESULT = "result.json"
CONFIG = "config.yaml"
EXPORT = "supermask"


def build_model(cfg: RunConfig, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """The plain model from the registry (with ``model.init_from``'s trained network in it), converted by
    the run's supermask options."""
    model = models.create(
        cfg.model.name,
        num_classes=num_classes,
        width=cfg.model.width,
        in_channels=in_channels,
        image_size=image_size,
        **cfg.model.kwargs,
    )
    if cfg.model.init_from:
        try:
            # the user named this config's model: a run of the same model of their own may be built
            trained, _, where = load_run(cfg.model.init_from, model_name=cfg.model.name)
        except SupermaskError as exc:
            raise TrainingError(
                f"model.init_from={cfg.model.init_from}: {exc}. It takes a supermask run directory or exported "
                "checkpoint; for other weights (a PyTorch state dict), give model.name=package.module:callable "
                "a function of your own that builds the model and loads them"
            ) from exc
        state = merge(trained).state_dict()  # the plain trained network: masks folded into its weights
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise TrainingError(
                f"model.init_from={cfg.model.init_from}: its network ({where}) does not fit this model: "
                f"{' '.join(str(exc).split())[:300]}"
            ) from exc
    return to_supermask(model, cfg.supermask_config())


def root_ignored(name: str, root: str) -> str:
    """The note for a ``data.root`` that a data set shipped with a package never reads."""
    return f"note: data.name={name} reads no folder ({DATASETS[name].note}): data.root={root} is ignored"


def build_data(cfg: RunConfig, device: torch.device, rank: int, world: int) -> tuple[Any, Any, int, int, int]:
    """(train loader, test loader, num_classes, in_channels, image_size)."""
    if DATASETS[cfg.data.name].folder:
        size = cfg.data.image_size or DATASETS[cfg.data.name].image_size
        train, test, info, classes = build_folder_loaders(
            cfg.data.root, size, cfg.data.batch_size, cfg.data.workers, cfg.train.seed, rank, world
        )
        return train, test, classes, 3, size
    train, test, info = build_tensor_loaders(
        cfg.data.name,
        cfg.data.root,
        cfg.data.batch_size,
        device,
        cfg.train.seed,
        rank,
        world,
        cfg.data.eval_batch_size,
        cfg.data.classes,
    )
    classes = len(cfg.data.classes) if cfg.data.classes is not None else info.num_classes
    return train, test, classes, info.in_channels, info.image_size


def build_optimizer(cfg: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD, SGDW or Adam over the trainable parameters (scores, or weights for ``dense``)."""
    decay, no_decay = [], []
    for _name, p in model.named_parameters():
        if not p.requires_grad:
            continue  # frozen random weights and frozen biases
        if cfg.optim.no_decay_bn_bias and (p.ndim <= 1):
            no_decay.append(p)
        else:
            decay.append(p)
    o = cfg.optim
    key = "decoupled_weight_decay" if o.name == "sgdw" else "weight_decay"
    groups = [{"params": decay, key: o.weight_decay}, {"params": no_decay, key: 0.0}]
    if o.name == "adam":
        return torch.optim.Adam(groups, lr=o.lr, betas=o.betas)
    if o.name == "sgdw":
        return SGDW(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)


class SGDW(torch.optim.SGD):
    """SGD with decoupled weight decay (Loshchilov & Hutter, "Decoupled Weight Decay Regularization";
    TensorFlow Addons' ``SGDW``): before each step every parameter shrinks by ``decoupled_weight_decay``
    times the schedule's multiplier (lr now / lr at the start), outside the gradient and the momentum."""

    def __init__(self, params: Any, lr: float, momentum: float = 0.0, nesterov: bool = False) -> None:
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=0.0)
        for group in self.param_groups:
            group.setdefault("decoupled_weight_decay", 0.0)
            group.setdefault("base_lr", lr)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        for group in self.param_groups:
            rate = group["decoupled_weight_decay"] * group["lr"] / group["base_lr"]
            if rate:
                for p in group["params"]:
                    if p.grad is not None:
                        p.mul_(1.0 - rate)
        return super().step(closure)


def learning_rate(cfg: RunConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Linear warm-up for ``warmup_epochs``, then cosine decay to 0, constant, or exponential (staircase)."""
    warmup = int(cfg.optim.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return cfg.optim.lr * (step + 1) / warmup
    if cfg.optim.schedule == "constant":
        return cfg.optim.lr
    if cfg.optim.schedule == "exponential":  # staircase, as TensorFlow's ExponentialDecay(staircase=True)
        decays = math.floor((step - warmup) / (cfg.optim.decay_epochs * steps_per_epoch))
        return cfg.optim.lr * cfg.optim.decay_rate**decays
    progress = (step - warmup) / max(1, total_steps - warmup)
    return cfg.optim.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, device: torch.device, autocast: bool = False) -> dict[str, float]:
    """Accuracy and mean loss of ``model`` on every batch of ``loader``."""
    was = model.training
    model.eval()
    correct, total, loss = 0, 0, 0.0
    try:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                out = model(x)
            loss += float(F.cross_entropy(out.float(), y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            total += len(y)
    finally:
        model.train(was)
    return {"accuracy": correct / max(1, total), "loss": loss / max(1, total), "examples": total}


def check_has_batches(loader: Any, cfg: RunConfig, world: int = 1, what: str = "the training data") -> None:
    """A training loader that yields no batch would make every epoch a no-op: a clear error instead."""
    if len(loader) > 0:
        return
    dataset = getattr(loader, "dataset", None)
    count = f"{len(dataset)} examples" if dataset is not None else "too few examples"
    per_rank = f" over {world} processes" if world > 1 else ""
    raise DataError(
        f"{what} gives no full batch: {count}{per_rank} with data.batch_size={cfg.data.batch_size} (a last "
        "partial batch is dropped); lower data.batch_size or add data"
    )


def channels_last_input(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last memory where that exists (a batch of images, 4-D); other inputs (features,
    token ids) unchanged: ``train.channels_last`` then acts on the model's convolutions alone."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _progress(cfg: RunConfig, loader: Any, epoch: int, rank: int) -> Any:
    mode = cfg.train.progress
    if rank != 0 or mode == "none" or mode == "lines" or (mode == "auto" and not sys.stderr.isatty()):
        return loader
    try:
        from tqdm import tqdm
    except ImportError:
        return loader
    return tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False, file=sys.stderr)


class RunLock:
    """One writer per run directory: an exclusive ``flock`` on ``<run dir>/.lock``, held for the whole
    run and released by the kernel when the process ends (a killed run leaves no stale lock)."""

    FILE = ".lock"

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / self.FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        import fcntl

        make_dirs(self.path.parent)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise StorageError(f"cannot create the lock file {self.path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunBusyError(
                f"{self.path.parent} is in use by another supermask process (pid {holder}); wait for it to "
                "finish, or choose another train.run_name or train.out_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


RUN_FILES = (TRAIN_STATE, METRICS, RESULT, CONFIG, "tasks_state.pt")


def _differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``section.key: saved -> wanted`` for each experiment key that differs."""
    out = []
    a, b = experiment_key(saved), experiment_key(wanted)
    for section in sorted(set(a) | set(b)):
        x, y = a.get(section, {}), b.get(section, {})
        for key in sorted(set(x) | set(y), key=str):
            if x.get(key) != y.get(key):
                out.append(f"{section}.{key}: {x.get(key)!r} -> {y.get(key)!r}")
    return out


def prepare_run_dir(cfg: RunConfig, run_dir: Path, world: int, writer: bool = True) -> dict[str, Any] | None:
    """Check what ``run_dir`` already holds against ``cfg`` (under the run's lock); return the training
    state to resume from, or None to start afresh. Never silently replaces or mixes runs. Only the
    ``writer`` (rank 0, holding the lock) removes a run that ``train.overwrite=true`` replaces."""
    present = [f for f in RUN_FILES if (run_dir / f).is_file()]
    if not present:
        return None
    if not cfg.train.resume:
        if not cfg.train.overwrite:
            what = "a finished run" if (run_dir / RESULT).is_file() else "a run"
            raise TrainingError(
                f"{run_dir} holds {what} and train.resume=false: set train.resume=true to continue it, "
                "train.overwrite=true to replace it, or choose another train.run_name"
            )
        if writer:
            for f in RUN_FILES:
                (run_dir / f).unlink(missing_ok=True)
            shutil.rmtree(run_dir / EXPORT, ignore_errors=True)
        return None
    state = None
    if (run_dir / TRAIN_STATE).is_file():
        try:
            state = torch.load(run_dir / TRAIN_STATE, map_location="cpu", weights_only=True)
            saved = state["config"]
        except Exception as exc:  # a foreign or damaged file: never train over it silently
            raise TrainingError(
                f"{run_dir / TRAIN_STATE} cannot be read ({exc}); set train.overwrite=true with "
                "train.resume=false to start this run again"
            ) from exc
    else:
        try:
            saved = read_yaml_file(run_dir / CONFIG) if (run_dir / CONFIG).is_file() else None
        except SupermaskConfigError as exc:
            raise TrainingError(f"{run_dir / CONFIG} cannot be read: {exc}") from exc
    if isinstance(saved, dict):
        diff = _differences(saved, cfg.to_dict())
    else:
        diff = ["(no readable config)"]
    if diff:
        raise TrainingError(
            f"{run_dir} holds a run with a different config ({'; '.join(diff[:5])}); use another "
            "train.run_name or train.out_dir, or replace it with train.resume=false train.overwrite=true"
        )
    if state is not None:
        saved_world = int(state.get("world_size", 1))
        if saved_world != world and not cfg.train.allow_world_size_change:
            batch = cfg.data.batch_size
            raise TrainingError(
                f"{run_dir} was trained with {saved_world} process(es) (global batch {saved_world * batch}); "
                f"resuming with {world} (global batch {world * batch}) would change the experiment. To continue "
                "with this world size on purpose, add train.allow_world_size_change=true (each epoch's world size "
                "is recorded in result.json)"
            )
        if cfg.train.deterministic and state.get("threads") not in (None, torch.get_num_threads()):
            raise TrainingError(
                f"{run_dir} ran deterministically with {state['threads']} threads, this process has "
                f"{torch.get_num_threads()}: set train.threads={state['threads']} to resume bit-identically"
            )
    return state


def _finished_result(run_dir: Path, state: dict[str, Any] | None, epochs: int) -> dict[str, Any] | None:
    """The stored result of a run that trained all its epochs and was exported, else None."""
    if state is None or state.get("epoch", 0) < epochs or not (run_dir / RESULT).is_file():
        return None
    try:
        result = read_json(run_dir / RESULT)
    except StorageError:
        return None  # re-evaluated and written again
    return result if isinstance(result, dict) else None


def _result_without_state(run_dir: Path, state_file: str) -> dict[str, Any] | None:
    """What a run directory (its config already checked against this run's) holds when its training
    state ``state_file`` is missing, as for a run copied from another machine or a committed summary: its
    finished result, kept as it is (returned); recorded epochs without a state, which cannot be continued
    and are never trained over (an error); or nothing recorded yet (None: the run starts)."""
    if (run_dir / state_file).is_file():
        return None
    if (run_dir / RESULT).is_file():
        try:
            result = read_json(run_dir / RESULT)
        except StorageError as exc:
            raise TrainingError(
                f"{exc}, and {run_dir} has no {state_file} to redo it from: "
                "keep it and use another train.run_name, or start it again with train.resume=false train.overwrite=true"
            ) from exc
        if isinstance(result, dict):
            return result
    epochs = 0
    if (run_dir / METRICS).is_file():
        try:
            epochs = sum(1 for line in (run_dir / METRICS).read_bytes().splitlines() if line.strip())
        except OSError as exc:
            raise StorageError(f"cannot read {run_dir / METRICS}: {exc.strerror or exc}") from exc
    if epochs:
        raise TrainingError(
            f"{run_dir} holds {epochs} recorded epoch(s) but no {state_file} (a run's training state stays on "
            "the machine that trained it), so it cannot be continued here and is not trained over: keep it and "
            "use another train.run_name or train.out_dir, or start it again with train.resume=false "
            "train.overwrite=true"
        )
    return None


def check_outputs(out: Any, classes: int, cfg: RunConfig) -> None:
    """The model's output must be a (batch, classes) tensor of logits: a head of another size would
    fail on a label it lacks (an IndexError deep in the loss) or, larger, train without a word."""
    if isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[1] == classes:
        return
    got = f"a tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
    raise TrainingError(
        f"model.name={cfg.model.name} gives {got} for a batch, and the data has {classes} classes: it must give "
        f"(batch, {classes}) logits (the model is built with num_classes={classes}; a model of your own should "
        "use it)"
    )


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, method: Any, layers: list[Any]) -> None:
    """One step from a loss: gradients, the mask method's hooks around the optimiser step (clamping,
    pruning, re-randomisation), the step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    method.before_step(layers)
    optimizer.step()
    method.after_step(layers)


def _all_finite(model: nn.Module) -> bool:
    """Whether every trainable parameter is finite (one pass; catches a NaN made by an epoch's last step)."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.requires_grad)


def _environment(device: torch.device, world: int, autocast: bool, channels_last: bool) -> dict[str, Any]:
    return {
        "world_size": world,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "bf16": autocast,
        "channels_last": channels_last,
        "hardware": describe_hardware(device, world),
    }


def check_same_precision(
    cfg: RunConfig,
    run_dir: Path,
    state: dict[str, Any],
    history: list[dict[str, Any]],
    bf16: bool,
    device: torch.device,
) -> None:
    """A run resumes in the precision its epochs ran in (train.bf16=auto may resolve differently on
    another machine, and runs before bf16 on CPUs read train.bf16=true as CUDA only: a checkpoint from
    before epochs recorded their precision ran bf16 exactly when its setting was true on CUDA)."""
    ran = [row["bf16"] for row in history if isinstance(row.get("bf16"), bool)]
    if not ran and history:
        saved = state.get("config", {}).get("train", {}).get("bf16") if isinstance(state.get("config"), dict) else None
        ran = [saved is True and device.type == "cuda"]
    if ran and ran[-1] != bf16:
        was, now = precision_name(ran[-1]), precision_name(bf16)
        raise TrainingError(
            f"{run_dir} trained epochs 1-{len(history)} in {was}; train.bf16={_show_bf16(cfg.train.bf16)} "
            f"would continue it in {now} here. Set train.bf16={str(ran[-1]).lower()} to resume it as it ran, "
            "or start it again (train.resume=false train.overwrite=true)"
        )


def _show_bf16(setting: bool | str) -> str:
    return setting if isinstance(setting, str) else str(setting).lower()


def _ran_on(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each stretch of epochs that ran on one environment: [{"epochs": [first, last], ...}]."""
    keys = ("world_size", "threads", "device", "bf16", "channels_last", "hardware")
    out: list[dict[str, Any]] = []
    for row in history:
        env = {k: row.get(k) for k in keys}
        if out and all(out[-1][k] == env[k] for k in keys):
            out[-1]["epochs"][1] = row["epoch"]
        else:
            out.append({"epochs": [row["epoch"], row["epoch"]], **env})
    return out


@contextmanager
def _execution(cfg: RunConfig) -> Iterator[None]:
    """Threads and deterministic algorithms for the run; the process's settings are restored after it."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        if cfg.train.threads is not None:
            torch.set_num_threads(cfg.train.threads)
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True)
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


class StopRequest:
    """Whether the run should stop now, writing its state: ``train.time_limit`` seconds have passed since
    it started, or SIGTERM / SIGUSR1 arrived (what SLURM sends before a time limit or preemption). The
    handlers are installed for the epochs (main thread only) and the previous ones restored after them. Under
    DDP the ranks agree every :attr:`EVERY` steps (one tiny all-reduce), so that all stop at one step."""

    EVERY = 20
    SIGNALS = ("SIGTERM", "SIGUSR1")

    def __init__(self, time_limit: float | None, world: int) -> None:
        self.deadline = None if time_limit is None else time.monotonic() + time_limit
        self.world = world
        self.signal: str | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                number = getattr(signal, name, None)
                if number is not None:
                    self._previous[number] = signal.signal(number, self._on_signal)

    def restore(self) -> None:
        import signal

        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _on_signal(self, number: int, frame: Any) -> None:
        import signal

        self.signal = signal.Signals(number).name

    def reason(self, step: int) -> str | None:
        """Why to stop after ``step`` (None: go on)."""
        why = self.signal or ("train.time_limit reached" if self._past_deadline() else None)
        if self.world > 1:
            if step % self.EVERY:
                return None
            flag = torch.tensor([1.0 if why else 0.0])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            return (why or "another process was asked to stop") if flag.item() else None
        return why

    def _past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


def _append_line(path: Path, row: dict[str, Any]) -> None:
    try:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc


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
        with _execution(cfg):
            if cfg.data.split_tasks > 1:
                return _train_split(cfg, log, run_dir, world)
            state = prepare_run_dir(cfg, run_dir, world, writer=master)
            finished = _finished_result(run_dir, state, cfg.train.epochs)
            if state is None and cfg.train.resume:
                finished = _result_without_state(run_dir, TRAIN_STATE)
            if finished is not None:
                if master:
                    log(f"{run_dir} is finished already: its result is kept")
                return finished
            return _train(cfg, log, state, world, rank)
    finally:
        if lock is not None:
            lock.release()


def _train_split(cfg: RunConfig, log: Any, run_dir: Path, world: int) -> dict[str, Any]:
    """A run over a split data set: one mask per task (see :mod:`supermask.multitask`)."""
    from supermask.multitask import TASKS_STATE, train_tasks

    if world > 1:
        raise TrainingError("data.split_tasks runs in one process; start it without torchrun")
    prepare_run_dir(cfg, run_dir, world)  # the lock is held; a different run there is refused
    if cfg.train.resume:
        finished = _result_without_state(run_dir, TASKS_STATE)
        if finished is not None:
            log(f"{run_dir} is finished already: its result is kept")
            return finished
    state = None
    if cfg.train.resume and (run_dir / TASKS_STATE).is_file():
        try:
            state = torch.load(run_dir / TASKS_STATE, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise TrainingError(f"{run_dir / TASKS_STATE} cannot be read ({exc}); start again with overwrite") from exc
        if state["tasks_done"] >= cfg.data.split_tasks and (run_dir / RESULT).is_file():
            log(f"{run_dir} is finished already: its result is kept")
            result = read_json(run_dir / RESULT)
            if isinstance(result, dict):
                return result
    return train_tasks(cfg, log, state)


def _train(cfg: RunConfig, log: Any, state: dict[str, Any] | None, world: int, rank: int) -> dict[str, Any]:
    device = configured_device(cfg.train.device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    master = rank == 0
    run_dir = cfg.run_dir()
    stop = StopRequest(cfg.train.time_limit, world)
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
        if master and cfg.method_defaults:
            settings = ", ".join(f"{k}={v}" for k, v in cfg.method_defaults.items())
            log(f"method {method.name}: the paper's optimiser settings, as none were given: {settings}")
        if master and cfg.data.root and not DATASETS[cfg.data.name].reads_root:
            log(root_ignored(cfg.data.name, cfg.data.root))
        masked = masked_fraction(model)
        if master:
            for line in run_header(cfg, model, train_loader, test_loader, steps_per_epoch, masked, device, autocast):
                log(line)
            if method.same_as_another():
                log(f"warning: {method.same_as_another()}")
        if master and cfg.ignored_settings:
            settings = ", ".join(f"{k}={v}" for k, v in cfg.ignored_settings.items())
            log(
                f"note: method {method.name} does not use {settings}: ignored (it changes neither network nor training)"
            )

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
            for row in silent_outputs(model):
                log(
                    f"warning: {row['name']} keeps {row['kept']} of its {row['total']} weights: {row['silent']} of its "
                    f"{row['outputs']} outputs have no kept weight and carry no signal (a global selection at a small k "
                    "can starve a layer; see supermask.sparsity_report)"
                )
        if master:
            make_dirs(run_dir)
            atomic_write(run_dir / CONFIG, to_yaml(cfg), fsync=False)
            # The metrics file holds exactly the checkpointed epochs (a kill may have left one more).
            atomic_write(run_dir / METRICS, "".join(json.dumps(row) + "\n" for row in history), fsync=False)
        net: nn.Module = model
        if cfg.train.compile:
            net = torch.compile(net)  # type: ignore[assignment]
        if world > 1:
            net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
        writer = _tensorboard(run_dir) if master else None
        environment = _environment(device, world, autocast, channels_last)

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
        stop.install()
        for epoch in range(start_epoch, cfg.train.epochs):
            torch.manual_seed(cfg.train.seed * 1000 + epoch)  # bernoulli sampling: same on resume
            if hasattr(train_loader, "set_epoch"):
                train_loader.set_epoch(epoch)
            elif hasattr(getattr(train_loader, "sampler", None), "set_epoch"):
                train_loader.sampler.set_epoch(epoch)
            net.train()
            t0 = time.perf_counter()
            seen, loss_sum, correct = 0, torch.zeros((), device=device), torch.zeros((), device=device)
            skip, earlier_seconds = 0, 0.0
            if partial is not None:  # the epoch a stop interrupted: its batches so far are skipped, not redone
                skip, seen, earlier_seconds = partial["step"], partial["seen"], partial["seconds"]
                loss_sum.fill_(partial["loss_sum"])
                correct.fill_(partial["correct"])
                lr = learning_rate(cfg, epoch * steps_per_epoch + skip - 1, total_steps, steps_per_epoch)
            for step, (x, y) in enumerate(_progress(cfg, train_loader, epoch, rank)):
                if step >= steps_per_epoch:
                    break
                if step < skip:
                    continue  # the loader's order and augmentation are the epoch's own: skipping replays them
                if partial is not None:  # the first step after the stop: the random state it stopped with
                    torch.set_rng_state(partial["rng"])
                    partial = None
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if channels_last:
                    x = channels_last_input(x)
                lr = learning_rate(cfg, epoch * steps_per_epoch + step, total_steps, steps_per_epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    try:
                        out = net(x)
                    except NonFiniteScoresError:  # diverged scores: stop as for a NaN loss, below
                        loss_sum.fill_(math.nan)
                        break
                    check_outputs(out, num_classes, cfg)
                    loss = F.cross_entropy(out.float(), y, label_smoothing=cfg.optim.label_smoothing)
                optimizer_step(loss, optimizer, method, layers)
                loss_sum += loss.detach() * len(y)
                if step % 50 == 49 and not math.isfinite(float(loss_sum)):  # one host sync per 50 steps
                    break
                correct += (out.argmax(1) == y).sum()
                seen += len(y)
                why = stop.reason(step + 1)
                if why is not None:
                    where = {
                        "step": step + 1,
                        "seen": seen,
                        "loss_sum": float(loss_sum),
                        "correct": float(correct),
                        "seconds": earlier_seconds + time.perf_counter() - t0,
                        "rng": torch.get_rng_state(),
                    }
                    if master:
                        with atomic_writer(run_dir / TRAIN_STATE) as f:
                            torch.save(snapshot(epoch, where), f)
                    raise RunInterrupted(
                        f"stopped ({why}) at step {step + 1} of epoch {epoch + 1}/{cfg.train.epochs}; its whole state "
                        f"is in {run_dir / TRAIN_STATE}: run the same command again to resume it there "
                        f"(exit code {EXIT_RESUMABLE})"
                    )
            partial = None  # (a stop after an epoch's last step resumes straight into its end)
            train_loss = float(loss_sum) / max(1, seen)
            method.on_epoch_end(layers, epoch + 1, cfg.train.epochs)
            test: dict[str, float] = {"loss": math.nan, "accuracy": math.nan}
            if math.isfinite(train_loss) and _all_finite(model):  # the last step may have made a NaN
                try:
                    test = evaluate(model, test_loader, device, autocast)
                except NonFiniteScoresError:
                    pass
            if not (math.isfinite(train_loss) and math.isfinite(test["loss"])):
                kept = (
                    f"The last good checkpoint (after epoch {history[-1]['epoch']}) is kept in {run_dir}"
                    if history
                    else "No epoch had completed, so there is no checkpoint to keep"
                )
                what = (
                    f"the training loss became {train_loss}"
                    if not math.isfinite(train_loss)
                    else ("the parameters or the test loss became non-finite")
                )
                raise TrainingError(
                    f"{what} in epoch {epoch + 1}; stopped. {kept}. Lower optim.lr or add warm-up (optim.warmup_epochs)"
                )
            row = {
                "epoch": epoch + 1,
                "lr": lr,
                "train_loss": train_loss,
                "train_accuracy": float(correct) / max(1, seen),
                "test_loss": test["loss"],
                "test_accuracy": test["accuracy"],
                "seconds": earlier_seconds + time.perf_counter() - t0,
                **environment,
            }
            history.append(row)
            if master:
                _append_line(run_dir / METRICS, row)
                if writer is not None:
                    for key, value in row.items():
                        if isinstance(value, (int, float)):
                            writer.add_scalar(key, value, epoch + 1)
                with atomic_writer(run_dir / TRAIN_STATE) as f:
                    torch.save(snapshot(epoch + 1), f)
                log(
                    f"epoch {epoch + 1}/{cfg.train.epochs}  loss {train_loss:.4f}  "
                    f"train acc {row['train_accuracy']:.4f}  test acc {test['accuracy']:.4f}  ({row['seconds']:.1f}s)"
                )

        # --- the result ----------------------------------------------------------------------
        final = history[-1] if history else {}
        report = sparsity_report(model)
        sm = cfg.supermask_config()
        result = {
            "run_dir": str(run_dir),
            "dataset": describe(cfg.data.name),
            "split": "test",
            "accuracy": final.get("test_accuracy"),
            "epochs": cfg.train.epochs,
            "model": cfg.model.name,
            "width": cfg.model.width,
            "method": sm.method,
            "k": sm.k,
            "weight_init": sm.weight_init,
            "scale_fan": sm.scale_fan,
            "seed": cfg.train.seed,
            "kept_fraction": report["converted"]["fraction"],
            "masked_fraction": masked,  # of ALL the model's weights: the rest stay dense (frozen or learned)
            "steps_per_epoch": steps_per_epoch,
            "world_size": world,
            "device": str(device),
            "hardware": describe_hardware(device, world),
            "ran_on": _ran_on(history),
            "precision": precision_name(autocast),
            "channels_last": channels_last,
            "deterministic": cfg.train.deterministic,
            "method_defaults": cfg.method_defaults,
            "ignored_settings": cfg.ignored_settings,
            "torch": torch.__version__,
            "config": cfg.to_dict(),
        }
        if master:
            export(model, cfg, run_dir / EXPORT, precision_name(autocast), channels_last)
            atomic_write(run_dir / RESULT, json.dumps(result, indent=1))
        if writer is not None:
            writer.close()
        return result
    finally:
        stop.restore()
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def masked_fraction(model: nn.Module) -> float:
    """The fraction of ALL the model's weights (every parameter and frozen weight but the scores) that a
    mask selects from; the rest stay dense whatever k says."""
    report = sparsity_report(model)
    return report["converted"]["total"] / max(1, report["model"]["total"])


def _examples(loader: Any) -> str:
    for what in ("dataset", "y"):
        try:
            return f"{len(getattr(loader, what)):,}"
        except (AttributeError, TypeError):
            continue
    return "?"


def run_header(
    cfg: RunConfig,
    model: nn.Module,
    train_loader: Any,
    test_loader: Any,
    steps_per_epoch: int,
    masked: float,
    device: torch.device,
    autocast: bool,
) -> list[str]:
    """What a run is about to do, printed before its first step: model and data, the schedule as it will
    run (``train.max_steps`` named when it cuts the epochs), the mask over what share of the weights, and
    where and in what precision it computes. A warning when more than a tenth of the weights stay dense."""
    sm = cfg.supermask_config()
    method = method_class(sm.method)
    what = f"{sm.method} k={sm.k}" if method.uses_k else sm.method
    per_epoch = len(train_loader)
    cut = (
        f" (train.max_steps={cfg.train.max_steps}: {steps_per_epoch} of each epoch's {per_epoch} steps)"
        if steps_per_epoch < per_epoch
        else ""
    )
    lines = [
        f"run: {cfg.model.name} on {describe(cfg.data.name)} ({_examples(train_loader)} train, "
        f"{_examples(test_loader)} test examples); {cfg.train.epochs} epochs x {steps_per_epoch} steps = "
        f"{cfg.train.epochs * steps_per_epoch:,} steps{cut}",
        f"     {what} over {sm.weight_init} weights, masking {100 * masked:.1f}% of the model's weights; "
        f"{describe_hardware(device)}, {precision_name(autocast)}, optimiser {cfg.optim.name} lr {cfg.optim.lr:g}",
    ]
    if method.has_scores and masked < 0.9:
        report = getattr(model, "supermask_report", None)
        dense = [e for e in report.unconverted if e.values] if report is not None else []
        largest = max(dense, key=lambda e: e.values, default=None)
        biggest = f" (the largest: {largest.name}, {largest.values:,} values: {largest.reason})" if largest else ""
        lines.append(
            f"warning: {100 * (1 - masked):.1f}% of the model's weights are not masked and stay dense{biggest}; "
            "k applies to the masked ones only (see model.supermask_report)"
        )
    return lines


def describe_hardware(device: torch.device, world: int = 1) -> str:
    """What a run ran on, for reports: "2 x NVIDIA H100 80GB HBM3" or "AMD EPYC CPU, 2 threads"."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), name)
        except OSError:
            pass
        name = f"{name} CPU, {torch.get_num_threads()} threads"
    return f"{world} x {name}" if world > 1 else name


def export(
    model: nn.Module, cfg: RunConfig, out: Path, precision: str | None = None, channels_last: bool | None = None
) -> Path:
    """The compact checkpoint, with the run config (model, data set), the precision it was trained and
    evaluated in (bf16 or fp32) and its memory layout in its metadata: one atomic save."""
    metadata: dict[str, Any] = {"run": cfg.to_dict()}
    if precision is not None:
        metadata["precision"] = precision
    if channels_last is not None:
        metadata["channels_last"] = channels_last
    return checkpoint.save(model, out, metadata=metadata)


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def load_run(
    path: str | os.PathLike[str], trust_model_code: bool = False, model_name: str | None = None
) -> tuple[nn.Module, RunConfig, Path]:
    """The trained model of a run directory or of an exported checkpoint directory. A model of one's own
    that it names (``package.module:callable``) is built only with ``trust_model_code`` or when
    ``model_name`` names it too (see :func:`supermask.runconfig.trust_model`)."""
    p = Path(path)
    if (p / EXPORT / checkpoint.CONFIG_FILE).is_file():
        p = p / EXPORT
    in_progress = not (p / checkpoint.CONFIG_FILE).is_file() and (p / TRAIN_STATE).is_file()
    if in_progress:  # an unfinished run: its last epoch's training checkpoint
        try:
            cfg = from_dict(read_yaml_file(p / CONFIG))
        except SupermaskConfigError as exc:
            raise TrainingError(f"cannot read {p / CONFIG}: {exc}") from exc
    elif (p / checkpoint.CONFIG_FILE).is_file():
        meta, _ = checkpoint.read_checkpoint(p)
        run = meta["metadata"].get("run")
        if not isinstance(run, dict):
            raise TrainingError(
                f"{p} is a checkpoint without a run config (saved by supermask.save, not by a run): "
                "load it in Python with supermask.load(path, model)"
            )
        cfg = from_dict(run)
    else:
        raise TrainingError(
            f"{path} is neither a run directory nor an exported checkpoint "
            "(expected supermask.json, or train_state.pt and config.yaml)"
        )
    trust_model(cfg, p, trust_model_code, model_name)
    name = cfg.data.name
    info = DATASETS[name]
    classes, channels, size = info.num_classes, info.in_channels, info.image_size
    if cfg.data.split_tasks > 1:  # one output per class of a task (see supermask.multitask)
        classes //= cfg.data.split_tasks
    if cfg.data.classes is not None:
        classes = len(cfg.data.classes)
    if info.folder:
        size = cfg.data.image_size or info.image_size
        train_dir = Path(cfg.data.root or ".").expanduser() / "train"
        if not train_dir.is_dir():
            raise DataError(f"{train_dir} does not exist: the run's image folder is needed to know its classes")
        classes = len([d for d in train_dir.iterdir() if d.is_dir()])
    plain = models.create(
        cfg.model.name,
        num_classes=classes,
        width=cfg.model.width,
        in_channels=channels,
        image_size=size,
        **cfg.model.kwargs,
    )
    if in_progress:  # a saved run: its scores come from the state (and so do its config's checks)
        model = to_supermask(plain, cfg.supermask_config(), _initial_scores=False)
        try:
            state = torch.load(p / TRAIN_STATE, map_location="cpu", weights_only=True)
            model.load_state_dict(state["model"])
        except Exception as exc:  # a damaged, truncated or foreign file: one line, never a traceback
            raise TrainingError(
                f"{p / TRAIN_STATE} cannot be read as this run's training state "
                f"({' '.join(str(exc).split())[:200] or type(exc).__name__}); evaluate a finished run's export, "
                "or resume the run to rewrite its state"
            ) from exc
        return model, cfg, p / TRAIN_STATE
    return checkpoint.load(p, plain), cfg, p
