"""Shared timing helpers: alternate the variants, repeat, report medians and ratios."""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable

import torch


def machine() -> str:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or platform.machine()
    return (
        f"{platform.node()} | {device} | threads {torch.get_num_threads()} | torch {torch.__version__} | "
        f"{time.strftime('%Y-%m-%d')}"
    )


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def alternate(variants: dict[str, Callable[[], object]], reps: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each variant, timed in turn (A B C A B C ...) to share the noise."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            sync()
            t = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def current_rss() -> int:
    """Resident bytes of this process now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> bool:
    """Restart the peak-RSS count at the present RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss() -> int:
    """The most resident bytes this process has held since the last :func:`reset_peak_rss`.

    ``VmHWM`` of ``/proc/self/status``, not ``getrusage``'s ``ru_maxrss``: Linux carries ru_maxrss over
    ``exec``, so a child started by a large process would report its parent's size.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def add_allocator_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--default-allocator",
        action="store_true",
        help="leave glibc's allocator as it is (a CPU run reuses freed memory: train.reuse_memory)",
    )


def set_allocator(args: argparse.Namespace) -> str:
    """As a CPU run does (``train.reuse_memory``), unless ``--default-allocator``: a line saying which."""
    if args.default_allocator:
        return "allocator: glibc's default (freed memory returned to the kernel)"
    from supermask.engine.step import reuse_freed_memory

    return f"allocator: freed memory reused, as in a run ({'on' if reuse_freed_memory() else 'not available here'})"
