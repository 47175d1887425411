"""A committed result reproduces exactly with today's code (issue 26, item 6): one run of
results/methods_mnist (edge-popup, k = 0.05, seed 0, LeNet-300-100 on MNIST, 10 epochs, fp32, 1 thread)
gives its committed test accuracy to the last example on the kind of CPU that made it (the one its
``hardware`` column names). Another CPU's kernels sum in another order, so there it must only agree within
a point (measured: 85.01% on an Intel Xeon with AMX against the AMD EPYC's 84.70%; the seed-to-seed std of
this setting is 0.85 points). Needs ../shared/data/mnist (the real files)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from supermask import cli
from supermask.engine.records import describe_hardware

ROOT = Path(__file__).resolve().parents[2]


MNIST = ROOT.parent / "shared" / "data" / "mnist"


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_dir(), reason="needs ../shared/data/mnist")
def test_a_committed_mnist_run_reproduces_to_the_last_example(tmp_path: Path) -> None:
    rows = list(csv.DictReader(open(ROOT / "results" / "methods_mnist" / "runs.csv")))
    row = next(
        r for r in rows if r["method"] == "edge-popup" and r["k"] == "0.05" and r["seed"] == "0" and r["epochs"] == "10"
    )
    committed = float(row["accuracy"])
    argv = [
        "train",
        "model.name=fc",
        "data.name=mnist",
        f"data.root={MNIST}",
        "data.batch_size=128",
        "train.epochs=10",
        "train.bf16=false",
        "train.channels_last=false",
        "train.threads=1",
        "train.progress=none",
        "supermask.method=edge-popup",
        "supermask.k=0.05",
        "train.seed=0",
        f"train.out_dir={tmp_path}",
    ]  # fmt: skip  (experiments/methods.sh's settings)
    assert cli.main(argv) == 0
    result = json.loads(next(tmp_path.glob("*/result.json")).read_text())
    assert committed == 0.847
    same_cpu = describe_hardware(torch.device("cpu")).split(" CPU,")[0] == row["hardware"].split(" CPU,")[0]
    if same_cpu:
        assert result["accuracy"] == committed
    else:
        assert abs(result["accuracy"] - committed) <= 0.01, (result["accuracy"], row["hardware"])
