"""bf16 autocast on the CPU against fp32, and edge-popup against dense under each (issue 15). Not a test.

    python benchmarks/cpu_bf16.py [--models conv4,cifar_resnet18] [--reps 10] [--compile] [--channels-last]
                                  [--json FILE]

For each model, every variant's training step (batch 128, SGD, the whole step: forward, backward, the
optimiser) and its evaluation forward (batch 1000, no gradient) are timed in one process, alternating
(dense fp32, dense bf16, edge-popup fp32, edge-popup bf16, ...) so that they share the machine's noise.
The epoch time is estimated from the medians as a CIFAR-10 epoch: 391 training steps + 10 evaluation
batches (the data pipeline, a few ms per batch as uint8 tensors, is not included). ``--compile`` adds
``torch.compile`` variants, ``--channels-last`` variants with the model and its inputs in channels-last
memory (``train.channels_last=true``). Edge-popup keeps k = 0.5 of signed constant weights. The process
reuses freed memory as a CPU run does (``train.reuse_memory``; ``--default-allocator``: glibc's default).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_allocator_flag, alternate, machine, set_allocator  # noqa: E402

STEPS_PER_EPOCH, EVAL_BATCHES = 391, 10


def make(
    model_name: str, method: str | None, bf16: bool, compiled: bool, channels_last: bool = False
) -> tuple[Callable[[], None], Callable[[], None]]:
    """(training step, evaluation forward) of one variant."""
    import supermask
    from supermask.models import create

    torch.manual_seed(0)
    model = create(model_name, num_classes=10, in_channels=3, image_size=32)
    layers: list = []
    if method is not None:
        config = supermask.SupermaskConfig(k=0.5, method=method, weight_init="signed_constant")
        model = supermask.to_supermask(model, config)
        layers = [layer for _, layer in supermask.supermask_layers(model)]
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory)  # type: ignore[call-overload]
    net = torch.compile(model) if compiled else model
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 3, 32, 32, generator=g), torch.randint(0, 10, (128,), generator=g)
    x_eval = torch.randn(1000, 3, 32, 32, generator=g)
    x, x_eval = x.contiguous(memory_format=memory), x_eval.contiguous(memory_format=memory)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)

    def step() -> None:
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if layers:
            layers[0].method.before_step(layers)
        opt.step()
        if layers:
            layers[0].method.after_step(layers)

    def evaluate() -> None:
        model.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            net(x_eval)

    return step, evaluate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="conv4,cifar_resnet18")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="add torch.compile variants")
    parser.add_argument("--channels-last", action="store_true", help="add channels-last variants")
    parser.add_argument("--json", default=None)
    add_allocator_flag(parser)
    args = parser.parse_args()
    print(f"# bf16 autocast vs fp32 on this CPU: {machine()}")
    allocator = set_allocator(args)
    print(f"# {allocator}")
    out: dict = {"machine": machine(), "allocator": allocator}
    for model_name in args.models.split(","):
        variants = {}
        for method in (None, "edge-popup"):
            for bf16 in (False, True):
                for compiled in (False, True) if args.compile else (False,):
                    for layout in (False, True) if args.channels_last else (False,):
                        name = f"{method or 'dense'} {'bf16' if bf16 else 'fp32'}"
                        name += f"{' compile' if compiled else ''}{' cl' if layout else ''}"
                        variants[name] = make(model_name, method, bf16, compiled, layout)
        steps = alternate({n: v[0] for n, v in variants.items()}, args.reps)
        evals = alternate({n: v[1] for n, v in variants.items()}, max(3, args.reps // 2))
        print(f"\n{model_name}: median of {args.reps} steps (batch 128) and evaluation batches (1000), alternating")
        print(f"  {'variant':28s} {'step ms':>8s} {'eval ms':>8s} {'epoch s':>8s}  vs fp32 (same method)  vs dense")
        rows = {}
        for name in variants:
            method, rest = name.split(" ", 1)
            epoch = STEPS_PER_EPOCH * steps[name] + EVAL_BATCHES * evals[name]
            fp32 = f"{method} fp32"
            dense = f"dense {rest}"
            rows[name] = {"step_s": steps[name], "eval_s": evals[name], "epoch_s": epoch}
            print(
                f"  {name:28s} {steps[name] * 1e3:8.1f} {evals[name] * 1e3:8.1f} {epoch:8.1f}  "
                f"{steps[fp32] / steps[name]:6.2f}x faster          {steps[name] / steps[dense]:.3f}x"
            )
        out[model_name] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
