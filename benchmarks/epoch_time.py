"""CIFAR-10 ResNet-18 epoch time through `supermask train` itself (issue 4, GPU figures).

    python benchmarks/epoch_time.py DATA_ROOT [--variants fp32,bf16,bf16+cl,bf16+cl+compile]
        [--methods edge-popup,dense] [--epochs 2] [--json FILE]

Each variant is a real run (data pipeline, step, evaluation of the 10,000 test images, checkpoint),
``train.epochs`` epochs long; the time reported is the last epoch's (the first pays cuDNN autotuning
and compilation). DATA_ROOT holds the CIFAR-10 JPEG-75 rebuild (the archive or its unpacked folder).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402
from supermask.runconfig import load_run_config  # noqa: E402
from supermask.train import train  # noqa: E402

FLAGS = {
    "fp32": ["train.bf16=false"],
    "bf16": ["train.bf16=true", "train.channels_last=false"],
    "bf16+cl": ["train.bf16=true", "train.channels_last=true"],
    "bf16+cl+compile": ["train.bf16=true", "train.channels_last=true", "train.compile=true"],
}
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "cifar10" / "resnet18.yaml"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data_root")
    parser.add_argument("--variants", default="fp32,bf16,bf16+cl,bf16+cl+compile")
    parser.add_argument("--methods", default="edge-popup,dense")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    print(f"# CIFAR-10 (JPEG-75 rebuild) ResNet-18 epoch time, batch 128: {machine()}")
    out: dict = {"machine": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            extra = ["supermask.weight_init=kaiming_normal", "optim.lr=0.01"] if method == "dense" else []
            for variant in args.variants.split(","):
                overrides = [
                    "data.name=cifar10-jpeg75",
                    f"data.root={args.data_root}",
                    f"train.epochs={args.epochs}",
                    f"train.out_dir={tmp}",
                    f"train.run_name={method}-{variant}",
                    "train.progress=none",
                    f"supermask.method={method}",
                    *extra,
                    *FLAGS[variant],
                ]
                train(load_run_config(CONFIG, overrides), log=lambda *a: None)
                rows = [json.loads(line) for line in (Path(tmp) / f"{method}-{variant}" / "metrics.jsonl").open()]
                out[f"{method}/{variant}"] = rows
                secs = [round(r["seconds"], 2) for r in rows]
                print(f"{method:10} {variant:16} epoch seconds {secs}  last test acc {rows[-1]['test_accuracy']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
