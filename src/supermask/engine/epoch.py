"""ONE epoch loop, for single runs and split-task runs alike: batches, learning rate, autocast, the
output check, the step with the mask method's hooks, running sums, diverged scores, and stop requests
(a stop writes where it stopped through the caller's ``on_stop``, and a resume skips what was done)."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from supermask.engine.optim import learning_rate
from supermask.engine.step import StopRequest, all_finite, check_outputs, optimizer_step
from supermask.errors import NonFiniteScoresError
from supermask.runconfig import RunConfig


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


#: Keras's epsilon: the categorical cross-entropy of probabilities clips them to [EPSILON, 1 - EPSILON]
KERAS_EPSILON = 1e-7


def training_loss(logits: torch.Tensor, y: torch.Tensor, kind: str, label_smoothing: float = 0.0) -> torch.Tensor:
    """The mean training loss of a batch: ``cross_entropy`` of the logits, or ``clipped_probabilities``,
    Keras's categorical cross-entropy of the softmax probabilities clipped to [1e-7, 1 - 1e-7] (what a
    TensorFlow model with its softmax inside a ``tf.function`` trains with: a probability beyond the clip,
    an example predicted with great confidence either way, gives no gradient)."""
    if kind == "cross_entropy":
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    classes = logits.shape[1]
    target = F.one_hot(y, classes).to(logits.dtype) * (1.0 - label_smoothing) + label_smoothing / classes
    probabilities = torch.softmax(logits, dim=1).clamp(KERAS_EPSILON, 1.0 - KERAS_EPSILON)
    return -(target * probabilities.log()).sum(dim=1).mean()


def channels_last_input(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last memory where that exists (a batch of images, 4-D); other inputs (features,
    token ids) unchanged: ``train.channels_last`` then acts on the model's convolutions alone."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def progress(cfg: RunConfig, loader: Any, epoch: int, rank: int) -> Any:
    mode = cfg.train.progress
    if rank != 0 or mode == "none" or mode == "lines" or (mode == "auto" and not sys.stderr.isatty()):
        return loader
    try:
        from tqdm import tqdm
    except ImportError:
        return loader
    return tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False, file=sys.stderr)


@dataclass
class EpochRun:
    """What every epoch of a run shares: the network the forward runs (``net``: the model, or its DDP or
    compiled wrapper), the optimiser, the mask method and its layers, where and how it computes, and the
    schedule (``steps_per_epoch`` steps an epoch, ``total_steps`` in all, for the learning rate)."""

    cfg: RunConfig
    net: nn.Module
    optimizer: torch.optim.Optimizer
    method: Any
    layers: list[Any]
    device: torch.device
    autocast: bool
    channels_last: bool
    num_classes: int
    steps_per_epoch: int
    total_steps: int
    rank: int = 0
    #: called every ``log_every`` steps with (step of the run, {"train/loss": mean since the last call, "lr"})
    on_log: Callable[[int, dict[str, float]], None] | None = None
    log_every: int = 50


def train_epoch(
    run: EpochRun,
    loader: Any,
    epoch: int,
    seed: int,
    stop: StopRequest | None = None,
    partial: dict[str, Any] | None = None,
    on_stop: Callable[[dict[str, Any], str, int], None] | None = None,
) -> dict[str, float]:
    """Train epoch ``epoch`` (0-based) of ``loader``; returns its ``train_loss`` (NaN when the loss or the
    scores diverged: the caller stops the run), ``train_accuracy``, last ``lr`` and ``seconds``.

    ``seed`` seeds PyTorch's generator for the epoch (stochastic masks: the same draws on a resume).
    ``partial``: where a stop interrupted this epoch (from ``on_stop``'s first argument): its steps are
    skipped (the loader replays its order and augmentation) and its sums carried on. After each step
    ``stop`` may ask to stop: ``on_stop(where, why, step)`` then writes the state; it must raise."""
    cfg, device = run.cfg, run.device
    steps = run.steps_per_epoch
    torch.manual_seed(seed)
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    elif hasattr(getattr(loader, "sampler", None), "set_epoch"):
        loader.sampler.set_epoch(epoch)
    run.net.train()
    t0 = time.perf_counter()
    seen, loss_sum, correct = 0, torch.zeros((), device=device), torch.zeros((), device=device)
    logged, logged_steps = torch.zeros((), device=device), 0
    skip, earlier_seconds, lr = 0, 0.0, learning_rate(cfg, epoch * steps, run.total_steps, steps)
    if partial is not None:  # the epoch a stop interrupted: its batches so far are skipped, not redone
        skip, seen, earlier_seconds = partial["step"], partial["seen"], partial["seconds"]
        loss_sum.fill_(partial["loss_sum"])
        correct.fill_(partial["correct"])
        lr = learning_rate(cfg, epoch * steps + skip - 1, run.total_steps, steps)
    for step, (x, y) in enumerate(progress(cfg, loader, epoch, run.rank)):
        if step >= steps:
            break
        if step < skip:
            continue  # the loader's order and augmentation are the epoch's own: skipping replays them
        if partial is not None:  # the first step after the stop: the random state it stopped with
            torch.set_rng_state(partial["rng"])
            partial = None
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if run.channels_last:
            x = channels_last_input(x)
        lr = learning_rate(cfg, epoch * steps + step, run.total_steps, steps)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.autocast):
            try:
                out = run.net(x)
            except NonFiniteScoresError:  # diverged scores: stop as for a NaN loss
                loss_sum.fill_(math.nan)
                break
            check_outputs(out, run.num_classes, cfg)
            loss = training_loss(out.float(), y, cfg.optim.loss, cfg.optim.label_smoothing)
        optimizer_step(loss, run.optimizer, run.method, run.layers)
        loss_sum += loss.detach() * len(y)
        if run.on_log is not None:
            logged += loss.detach()
            logged_steps += 1
            if (step + 1) % run.log_every == 0:  # one host sync per log_every steps
                run.on_log(epoch * steps + step + 1, {"train/loss": float(logged) / logged_steps, "lr": lr})
                logged.zero_()
                logged_steps = 0
        if step % 50 == 49 and not math.isfinite(float(loss_sum)):  # one host sync per 50 steps
            break
        correct += (out.argmax(1) == y).sum()
        seen += len(y)
        why = stop.reason(step + 1) if stop is not None else None
        if why is not None and on_stop is not None:
            where = {
                "step": step + 1,
                "seen": seen,
                "loss_sum": float(loss_sum),
                "correct": float(correct),
                "seconds": earlier_seconds + time.perf_counter() - t0,
                "rng": torch.get_rng_state(),
            }
            on_stop(where, why, step + 1)
    return {
        "train_loss": float(loss_sum) / max(1, seen),
        "train_accuracy": float(correct) / max(1, seen),
        "lr": lr,
        "seconds": earlier_seconds + time.perf_counter() - t0,
    }


def evaluate_after(
    model: nn.Module, train_loss: float, evaluate_fn: Callable[[], dict[str, float]]
) -> tuple[dict[str, float], str]:
    """The test metrics after an epoch, and what diverged ("" when nothing): a non-finite training loss,
    parameters made non-finite by the epoch's last step, or a non-finite test loss (NaN scores)."""
    test: dict[str, float] = {"loss": math.nan, "accuracy": math.nan}
    if math.isfinite(train_loss) and all_finite(model):
        try:
            test = evaluate_fn()
        except NonFiniteScoresError:
            pass
    if not math.isfinite(train_loss):
        return test, f"the training loss became {train_loss}"
    if not math.isfinite(test["loss"]):
        return test, "the parameters or the test loss became non-finite"
    return test, ""
