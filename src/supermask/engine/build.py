"""Building a run's pieces from its config: the data loaders, the model (converted by the run's
supermask options), the header a run prints before its first step, the exported checkpoint, and a
finished or unfinished run's trained model (:func:`load_run`). Nothing here trains."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from supermask import models
from supermask.core import checkpoint
from supermask.core.convert import apply_conversion, to_supermask
from supermask.core.inspection import merge, sparsity_report
from supermask.core.methods import method_class
from supermask.core.targets import plan_conversion
from supermask.data import DATASETS, build_folder_loaders, build_tensor_loaders, describe
from supermask.engine.records import describe_hardware
from supermask.engine.rundir import CONFIG, EXPORT, TRAIN_STATE
from supermask.errors import DataError, SupermaskConfigError, SupermaskError, TrainingError
from supermask.precision import precision_name
from supermask.runconfig import RunConfig, from_dict, read_yaml_file, trust_model


def plain_model(cfg: RunConfig, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """The run's model from the registry (or ``package.module:callable``), unconverted, with
    ``model.extra_outputs`` output units beyond the ``num_classes`` the labels use."""
    return models.create(
        cfg.model.name,
        num_classes=num_classes + cfg.model.extra_outputs,
        width=cfg.model.width,
        in_channels=in_channels,
        image_size=image_size,
        **cfg.model.kwargs,
    )


def build_model(cfg: RunConfig, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """The plain model from the registry (with ``model.init_from``'s trained network in it), converted by
    the run's supermask options."""
    model = plain_model(cfg, num_classes, in_channels, image_size)
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
        standardize=cfg.data.standardize,
        shuffle=cfg.data.shuffle,
        train_examples=cfg.data.train_examples,
        augment=cfg.data.augment,
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
    sm = cfg.supermask
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
    report = getattr(model, "supermask_report", None)
    if report is not None:  # the conversion report's summary (print(model.supermask_report) has it all)
        dense = [e for e in report.unconverted if e.values]
        line = f"     converted {len(report.converted)} layers ({report.converted_weights:,} weights)"
        if report.in_place:
            line += f", {len(report.in_place)} of them masked in place"
        if dense:
            frozen = sum(e.values for e in dense if not e.trainable)
            line += f"; not converted: {len(dense)} ({frozen:,} values frozen, {sum(e.values for e in dense) - frozen:,} learned)"
        lines.append(line)
    if method.has_scores and masked < 0.9:
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


def load_run(
    path: str | os.PathLike[str],
    trust_model_code: bool = False,
    model_name: str | None = None,
    with_scores: bool = False,
) -> tuple[nn.Module, RunConfig, Path]:
    """The trained model of a run directory or of an exported checkpoint directory. A model of one's own
    that it names (``package.module:callable``) is built only with ``trust_model_code`` or when
    ``model_name`` names it too (see :func:`supermask.runconfig.trust_model`). ``with_scores``: a run
    directory's model comes from its training state (its last epoch's scores), not its export (masks only)."""
    p = Path(path)
    if (p / EXPORT / checkpoint.CONFIG_FILE).is_file() and not (with_scores and (p / TRAIN_STATE).is_file()):
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
    if cfg.data.split_tasks > 1:  # one output per class of a task (see supermask.multitask); permuted: all
        classes //= cfg.data.split_tasks
    if cfg.data.classes is not None:
        classes = len(cfg.data.classes)
    if info.folder:
        size = cfg.data.image_size or info.image_size
        train_dir = Path(cfg.data.root or ".").expanduser() / "train"
        if not train_dir.is_dir():
            raise DataError(f"{train_dir} does not exist: the run's image folder is needed to know its classes")
        classes = len([d for d in train_dir.iterdir() if d.is_dir()])
    plain = plain_model(cfg, classes, channels, size)
    if in_progress:  # a saved run: its scores come from the state (and so do its config's checks)
        model = apply_conversion(plain, plan_conversion(plain, cfg.supermask_config()), initial_scores=False)
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
