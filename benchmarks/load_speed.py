"""Opening a seed + mask checkpoint against a full fp32 state_dict (issue 15). Not a test: prints times.

    python benchmarks/load_speed.py [--model wide_resnet50_2] [--reps 3]

One process: the model's compact checkpoint (``supermask.save``) and its fp32 ``state_dict``
(``torch.save``) are written to a temporary folder, then ``supermask.load`` onto a fresh model and
``torch.load`` + ``load_state_dict`` alternate; medians, the ratio, and the weights regenerated (and
checked) per second. ``to_supermask`` on a fresh model is timed too.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import supermask  # noqa: E402
from common import machine  # noqa: E402
from supermask.models import create  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="wide_resnet50_2")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    print(machine())

    def fresh() -> torch.nn.Module:
        return create(args.model, num_classes=1000, image_size=224)

    with tempfile.TemporaryDirectory() as tmp:
        model = fresh()
        torch.save(model.state_dict(), Path(tmp) / "state.pt")
        t = time.perf_counter()
        supermask.to_supermask(model, supermask.SupermaskConfig(k=0.3))
        convert = time.perf_counter() - t
        supermask.save(model, Path(tmp) / "ck")
        weights = sum(layer.base_layer.weight.numel() for _, layer in supermask.supermask_layers(model))
        del model
        ours, theirs = [], []
        for _ in range(args.reps):
            plain = fresh()
            t = time.perf_counter()
            supermask.load(Path(tmp) / "ck", plain)
            ours.append(time.perf_counter() - t)
            del plain
            plain = fresh()
            t = time.perf_counter()
            plain.load_state_dict(torch.load(Path(tmp) / "state.pt", weights_only=True))
            theirs.append(time.perf_counter() - t)
            del plain
        size = sum(f.stat().st_size for f in (Path(tmp) / "ck").iterdir())
        fp32 = (Path(tmp) / "state.pt").stat().st_size
    ours.sort()
    theirs.sort()
    a, b = ours[len(ours) // 2], theirs[len(theirs) // 2]
    print(
        f"{args.model}: {weights / 1e6:.1f}M converted weights; checkpoint {size / 1e6:.1f} MB, fp32 {fp32 / 1e6:.0f} MB"
    )
    print(f"  to_supermask          {convert:.2f} s")
    print(
        f"  supermask.load        {a:.2f} s  ({weights / a / 1e6:.0f}M weights/s)   all: {[round(x, 2) for x in ours]}"
    )
    print(f"  torch.load+load_sd    {b:.2f} s   all: {[round(x, 2) for x in theirs]}")
    print(f"  ratio load / state_dict: {a / b:.1f}x")


if __name__ == "__main__":
    main()
