"""One optimiser step and what surrounds the steps: the output check, the mask method's hooks, the
finite check, the process's thread and allocator settings, and stop requests (time limit, SIGTERM, SIGUSR1)."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from supermask.errors import TrainingError
from supermask.precision import configured_device
from supermask.runconfig import RunConfig


def check_outputs(out: Any, classes: int, cfg: RunConfig) -> None:
    """The model's output must be a (batch, classes) tensor of logits: a head of another size would
    fail on a label it lacks (an IndexError deep in the loss) or, larger, train without a word."""
    outputs = classes + cfg.model.extra_outputs  # model.extra_outputs: units beyond the classes, never a label
    if isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[1] == outputs:
        return
    got = f"a tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
    extra = f" and model.extra_outputs={cfg.model.extra_outputs}" if cfg.model.extra_outputs else ""
    raise TrainingError(
        f"model.name={cfg.model.name} gives {got} for a batch, and the data has {classes} classes{extra}: it must "
        f"give (batch, {outputs}) logits (a model of your own is given num_classes={outputs} when its factory names "
        "that parameter; a factory taking **kwargs gets it from model.kwargs under its own name, e.g. "
        f"model.kwargs={{num_classes: {outputs}}} for timm, {{num_labels: {outputs}}} for transformers)"
    )


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, method: Any, layers: list[Any]) -> None:
    """One step from a loss: gradients, the mask method's hooks around the optimiser step (clamping,
    pruning, re-randomisation), the step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    method.before_step(layers)
    optimizer.step()
    method.after_step(layers)


def all_finite(model: nn.Module) -> bool:
    """Whether every trainable parameter is finite (one pass; catches a NaN made by an epoch's last step)."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.requires_grad)


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


def reuse_freed_memory() -> bool:
    """Make glibc's allocator keep the memory a process frees for its next allocations (no ``mmap`` for
    large blocks, no trimming of the heap), instead of handing it back to the kernel and faulting it in
    again, page by page, on the next step. A CPU training step frees and reallocates its activations and
    gradients every step: by default that cost 10,000-50,000 page faults a step on Conv4 (batch 128);
    an fp32 epoch ran 12% slower for it, a bf16 one about the same (docs/BENCHMARKS.md). The process's memory then stays at its peak. A process-wide
    setting that lasts for the process (glibc cannot return to its adaptive default). True where it took
    effect: Linux with glibc; elsewhere it does nothing."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


@contextmanager
def execution(cfg: RunConfig) -> Iterator[None]:
    """Threads and deterministic algorithms for the run, restored after it; on a CPU run with
    ``train.reuse_memory``, :func:`reuse_freed_memory` (for the rest of the process)."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    if cfg.train.reuse_memory and configured_device(cfg.train.device).type == "cpu":
        reuse_freed_memory()
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
