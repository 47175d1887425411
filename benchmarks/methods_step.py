"""Every mask method's training step against the dense step (issue 13). Not a test: prints medians and ratios.

    python benchmarks/methods_step.py [--model conv4] [--reps 20] [--before SRC_DIR] [--rounds 6]
                                      [--bf16] [--channels-last]

All variants are timed in one process, alternating (dense, method 1, method 2, ..., dense, ...), each step
including the method's hooks (before/after the optimiser step). ``--before SRC_DIR`` also compares
edge-popup's step with the code in SRC_DIR (e.g. a git worktree of the commit before a change, its
``src``): the two versions cannot share a process, so each round runs one child process per version,
alternating, and the medians of the rounds are compared. ``--bf16`` and ``--channels-last`` time the steps
as a run does under ``train.bf16=true`` / ``train.channels_last=true`` (bf16 autocast over the forward;
the model and its inputs in channels-last memory). The process reuses freed memory as a CPU run does
(``train.reuse_memory``); ``--default-allocator`` times it with glibc's default instead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_allocator_flag, alternate, machine, set_allocator  # noqa: E402

SHAPES = {"conv4": (3, 32), "conv2": (3, 32), "lenet": (1, 28)}


def make_step(  # type: ignore[no-untyped-def]
    model_name: str, method: str | None, batch: int, bf16: bool = False, channels_last: bool = False
):
    import supermask
    from supermask.models import create

    c, s = SHAPES[model_name]
    name = "fc" if model_name == "lenet" else model_name
    torch.manual_seed(0)
    model = create(name, in_channels=c, image_size=s)
    hooks = None
    if method is not None:
        model = supermask.to_supermask(model, supermask.SupermaskConfig(k=0.5, method=method))
        layers = [layer for _, layer in supermask.supermask_layers(model)]
        hooks = (layers[0].method, layers) if hasattr(layers[0].method, "after_step") else None
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, c, s, s, generator=g), torch.randint(0, 10, (batch,), generator=g)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        if hooks is not None:
            hooks[0].before_step(hooks[1])
        opt.step()
        if hooks is not None:
            hooks[0].after_step(hooks[1])

    return step


def child(model_name: str, reps: int, batch: int, bf16: bool, channels_last: bool) -> None:
    """One version's edge-popup step, timed alone in this process: prints the median seconds."""
    step = make_step(model_name, "edge-popup", batch, bf16, channels_last)
    print(json.dumps(alternate({"step": step}, reps)["step"]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="conv4", choices=sorted(SHAPES))
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--before", default=None, help="src folder of the version to compare edge-popup with")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--methods", default=None, help="comma-separated subset (default: every registered one)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast over the forward pass")
    parser.add_argument("--channels-last", action="store_true", help="model and inputs in channels-last memory")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    add_allocator_flag(parser)
    args = parser.parse_args()
    if args.child:  # the parent set the allocator through the environment (the older version may lack it)
        child(args.model, args.reps, args.batch, args.bf16, args.channels_last)
        return
    from supermask.core.methods import method_names

    print(machine())
    print(set_allocator(args))
    how = {"bf16": args.bf16, "channels_last": args.channels_last}
    steps = {"dense": make_step(args.model, None, args.batch, **how)}
    chosen = args.methods.split(",") if args.methods else [m for m in method_names() if m != "dense"]
    steps.update({m: make_step(args.model, m, args.batch, **how) for m in chosen})
    medians = alternate(steps, args.reps)
    mode = ("bf16" if args.bf16 else "fp32") + (", channels-last" if args.channels_last else "")
    print(f"{args.model} training step, batch {args.batch}, {mode}, median of {args.reps} (alternating):")
    for name, t in medians.items():
        print(f"  {name:18s} {t * 1e3:8.1f} ms   {t / medians['dense']:.3f}x dense")
    if args.before:
        here = str(Path(__file__).resolve().parents[1] / "src")
        times: dict[str, list[float]] = {"before": [], "now": []}
        cmd = [sys.executable, __file__, "--child", "--model", args.model, "--reps", str(args.reps)]
        cmd += [flag for flag, on in (("--bf16", args.bf16), ("--channels-last", args.channels_last)) if on]
        for _ in range(args.rounds):
            for label, src in (("before", args.before), ("now", here)):
                env = {**os.environ, "PYTHONPATH": src}
                if not args.default_allocator:  # glibc's environment names for what reuse_freed_memory sets
                    env.update(MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_=str(2**31 - 1))
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
                times[label].append(float(out.strip().splitlines()[-1]))
        before, now = statistics.median(times["before"]), statistics.median(times["now"])
        print(
            f"edge-popup step: before {before * 1e3:.1f} ms, now {now * 1e3:.1f} ms: now/before {now / before:.3f} "
            f"(medians of {args.rounds} alternating child processes)"
        )


if __name__ == "__main__":
    main()
