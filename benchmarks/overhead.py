"""Where a supermask step's extra time goes (issue 4): the step with parts taken out, and the cost of one
pass over a weight-sized array once it is out of cache. Not a test: it prints medians and ratios.

    python benchmarks/overhead.py [--model lenet|conv4] [--reps 300]

Step variants, timed alternating in one process (medians):
  dense        the same network, weights learned
  supermask    edge-popup, k = 0.5
  keep-all     k = 1: no selection, but weight * mask and the straight-through backward as usual
  no-sign      k = 0.5 with the backward's sign(score) pass left out (WRONG gradients for negative
               scores: a measurement of what one weight-sized pass costs inside the step, nothing else)
Then single operations on the largest layer's shape, with the last-level cache flushed before each
call (as inside a training step, where the arrays have been evicted by the matrix products).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import supermask  # noqa: E402
from common import alternate, machine  # noqa: E402
from run_all import MODELS, batch, make_step  # noqa: E402
from supermask.core import masks  # noqa: E402


def _backward_without_sign(ctx, grad):  # type: ignore[no-untyped-def]
    weight, _scores = ctx.saved_tensors
    return None, grad * weight, None, None


def without_sign(step: Callable[[], None]) -> Callable[[], None]:
    """``step`` with MaskedWeight's backward swapped for one that skips sign(score) (restored after)."""
    original = masks.MaskedWeight.backward

    def f() -> None:
        masks.MaskedWeight.backward = staticmethod(_backward_without_sign)  # type: ignore[method-assign]
        try:
            step()
        finally:
            masks.MaskedWeight.backward = original  # type: ignore[method-assign]

    return f


def bench_steps(name: str, reps: int) -> None:
    x, y = batch(name)
    models = {}
    for variant, k in (("dense", None), ("supermask", 0.5), ("keep-all", 1.0), ("no-sign", 0.5)):
        torch.manual_seed(0)
        model = MODELS[name]()
        models[variant] = model if k is None else supermask.to_supermask(model, supermask.SupermaskConfig(k=k))
    steps = {v: make_step(m, x, y) for v, m in models.items()}
    steps["no-sign"] = without_sign(steps["no-sign"])
    t = alternate(steps, reps)
    print(f"\n## {name} training step, batch 128 ({reps} alternating repetitions): median and / dense")
    for v, s in t.items():
        print(f"{v:10} {s * 1e3:9.3f} ms  {s / t['dense']:6.3f}x")


def bench_passes(name: str, reps: int) -> None:
    layer = max((m for m in MODELS[name]().modules() if hasattr(m, "weight")), key=lambda m: m.weight.numel())
    shape = tuple(layer.weight.shape)
    g = torch.Generator().manual_seed(0)
    w, s, gr = (torch.randn(shape, generator=g) for _ in range(3))
    mask = s.abs() >= 0.6745
    wn, sn, mn = w.numpy(), s.numpy(), mask.numpy()
    flush = [np.ones(8 << 20, np.float32) for _ in range(2)]  # 64 MiB, twice the last-level cache here

    def cold(fn: Callable[[], object]) -> float:
        ts = []
        for _ in range(reps):
            for f in flush:
                f += 1.0
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts) * 1e6

    ops: dict[str, Callable[[], object]] = {
        "torch |s|": lambda: s.abs(),
        "numpy |s|": lambda: np.abs(sn),
        "numpy |s| >= t": lambda: np.abs(sn) >= 0.5,
        "numpy w * bool mask": lambda: np.multiply(wn, mn),
        "torch w * bool mask": lambda: w * mask,
        "torch sign(s)": lambda: s.sign(),
        "torch sign(s) * w * g": lambda: s.sign().mul_(w).mul_(gr),
        "torch g * w": lambda: gr * w,
    }
    print(f"\n## one operation on {name}'s largest layer {shape} ({w.numel():,} weights), cache flushed: median us")
    for label, fn in ops.items():
        print(f"{label:24} {cold(fn):8.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(MODELS), default="lenet")
    p.add_argument("--reps", type=int, default=300, help="repetitions (a tenth of them for conv4 and resnet18)")
    args = p.parse_args()
    print(machine())
    reps = args.reps if args.model == "lenet" else max(5, args.reps // 10)
    bench_steps(args.model, reps)
    bench_passes(args.model, min(args.reps, 200))


if __name__ == "__main__":
    main()
