"""Top-k selection kernels alone, per layer size (issue 4): the old and new sync-free thresholds and the
paper's sort. Medians in microseconds; on the GPU when there is one.

    python benchmarks/selection.py [--reps 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, sync  # noqa: E402
from paper_reference import GetSubnet  # noqa: E402
from supermask.core.masks import kept_count, kth_largest, mask_above  # noqa: E402

# weights per layer: LeNet-300-100's, Conv4's and CIFAR ResNet-18's distinct layer sizes
SIZES = {
    "resnet18 fc": 5_120,
    "resnet18 conv1": 1_728,
    "resnet18 1x1 128": 8_192,
    "lenet fc3": 1_000,
    "lenet fc2": 30_000,
    "resnet18 conv 64": 36_864,
    "conv4 conv2": 36_864,
    "conv4 conv4": 73_728,
    "resnet18 conv 128": 147_456,
    "lenet fc1": 235_200,
    "resnet18 conv 256": 589_824,
    "resnet18 conv 512": 2_359_296,
    "conv4 fc1": 4_194_304,
}


def threshold_mask(a: torch.Tensor, kept: int, sort_below: int) -> torch.Tensor:
    """topk_mask's sync-free path with the sort/topk switch given."""
    return mask_above(a, kth_largest(a, kept, sort_below), kept)


def kthvalue_mask(a: torch.Tensor, kept: int) -> torch.Tensor:
    """The previous sync-free path: kthvalue threshold, same tie-break."""
    return mask_above(a, torch.kthvalue(a, a.numel() - kept + 1).values, kept)


def paper_sort_mask(a: torch.Tensor, k: float) -> torch.Tensor:
    """allenai/hidden-networks GetSubnet.forward: a full sort, then two scatters."""
    with torch.no_grad():
        return GetSubnet.apply(a, k)


def median_us(fn, reps: int) -> float:  # type: ignore[no-untyped-def]
    for _ in range(3):
        fn()
    ts = []
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return 1e6 * statistics.median(ts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--k", type=float, default=0.3)
    args = parser.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"# selection kernels, k={args.k}: {machine()}")
    print(f"{'layer':18} {'n':>9} {'kthvalue':>9} {'topk':>9} {'sort':>9} {'paper sort':>11}  (us per mask)")
    for name, n in SIZES.items():
        a = torch.randint(0, n // 4, (n,), device=dev).float()  # with ties, as any real check needs
        kept = kept_count(args.k, n)
        ref = kthvalue_mask(a, kept)
        assert torch.equal(ref, threshold_mask(a, kept, 0)) and torch.equal(ref, threshold_mask(a, kept, n + 1))
        t_kth = median_us(lambda: kthvalue_mask(a, kept), args.reps)
        t_topk = median_us(lambda: threshold_mask(a, kept, 0), args.reps)
        t_sort = median_us(lambda: threshold_mask(a, kept, n + 1), args.reps)
        t_paper = median_us(lambda: paper_sort_mask(a, args.k), args.reps)
        print(f"{name:18} {n:9d} {t_kth:9.1f} {t_topk:9.1f} {t_sort:9.1f} {t_paper:11.1f}")


if __name__ == "__main__":
    main()
