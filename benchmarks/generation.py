"""The counter-based generator (supermask.core.rng) against another version of it. Not a test: prints times.

    python benchmarks/generation.py [--n 25500000] [--reps 7] [--before OTHER/src]

Times ``signed_constant`` (the frozen weights of the default init, what ``load`` regenerates) and
``random_uniform`` over ``n`` numbers, alternating with the same functions imported from ``--before``'s
``supermask/core/rng.py`` (e.g. a worktree of an earlier commit), checks that both give the same bits,
and prints medians and ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import alternate, machine  # noqa: E402
from supermask.core import rng  # noqa: E402


def load_rng(src: str) -> ModuleType:
    path = Path(src) / "supermask" / "core" / "rng.py"
    spec = importlib.util.spec_from_file_location("rng_before", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise SystemExit(f"--before {src}: no supermask/core/rng.py there")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=25_500_000, help="numbers per call (ResNet-50: 25.5M weights)")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--before", default=None, metavar="SRC", help="another tree's src folder to compare with")
    args = parser.parse_args()
    print(machine())
    versions = {"this": rng, **({"before": load_rng(args.before)} if args.before else {})}
    for name, call in (
        ("signed_constant", lambda m: m.signed_constant(7, args.n, 0.01)),
        ("random_uniform", lambda m: m.random_uniform(7, args.n)),
    ):
        outputs = [call(m) for m in versions.values()]
        if any(not np.array_equal(outputs[0].view(np.uint8), o.view(np.uint8)) for o in outputs[1:]):
            raise SystemExit(f"{name}: the versions give different bits")
        times = alternate({v: (lambda m=m: call(m)) for v, m in versions.items()}, args.reps, warmup=1)
        line = "  ".join(f"{v} {t * 1e3:.1f} ms ({args.n / t / 1e6:.0f}M/s)" for v, t in times.items())
        ratio = f"  before / this {times['before'] / times['this']:.2f}x" if "before" in times else ""
        print(f"{name:16s} {line}{ratio}")


if __name__ == "__main__":
    main()
