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

from supermask import models
from supermask.core import checkpoint
from supermask.core.convert import merge, silent_outputs, sparsity_report, supermask_layers, to_supermask
from supermask.core.methods import method_class
from supermask.data import DATASETS, build_folder_loaders, build_tensor_loaders, describe

# The engine's pieces that scripts and tests reach through this module, as before it was split.
from supermask.engine.epoch import (
    EpochRun,
    channels_last_input,  # noqa: E402, F401
    evaluate,
    evaluate_after,
    train_epoch,
)
from supermask.engine.optim import SGDW, build_optimizer, learning_rate  # noqa: E402, F401
from supermask.engine.records import check_same_precision, describe_hardware, environment, ran_on
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
from supermask.errors import (
    EXIT_RESUMABLE,
    DataError,
    RunInterrupted,
    SupermaskConfigError,
    SupermaskError,
    TrainingError,
)
from supermask.fileio import atomic_write, atomic_writer, make_dirs, read_json, remove_temp_files
from supermask.precision import configured_device, precision_name, use_bf16, use_channels_last
from supermask.runconfig import RunConfig, from_dict, read_yaml_file, to_yaml, trust_model


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
            if cfg.data.split_tasks > 1:
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
    """A run over a split data set: one mask per task (see :mod:`supermask.multitask`)."""
    from supermask.multitask import train_tasks

    if world > 1:
        raise TrainingError("data.split_tasks runs in one process; start it without torchrun")
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
            same = method.same_as_another()
            if same:
                log(f"warning: {same}")
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
            train_loss, lr = sums["train_loss"], sums["lr"]
            method.on_epoch_end(layers, epoch + 1, cfg.train.epochs)
            test, diverged = evaluate_after(
                model, train_loss, functools.partial(evaluate, model, test_loader, device, autocast)
            )
            if diverged:
                kept = (
                    f"The last good checkpoint (after epoch {history[-1]['epoch']}) is kept in {run_dir}"
                    if history
                    else "No epoch had completed, so there is no checkpoint to keep"
                )
                raise TrainingError(
                    f"{diverged} in epoch {epoch + 1}; stopped. {kept}. Lower optim.lr or add warm-up (optim.warmup_epochs)"
                )
            row = {
                "epoch": epoch + 1,
                "lr": lr,
                "train_loss": train_loss,
                "train_accuracy": sums["train_accuracy"],
                "test_loss": test["loss"],
                "test_accuracy": test["accuracy"],
                "seconds": sums["seconds"],
                **env,
            }
            history.append(row)
            if master:
                append_line(run_dir / METRICS, row)
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
            "ran_on": ran_on(history),
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
