"""A committed result reproduces exactly with today's code (issue 26, item 6): one run of
results/methods_mnist (edge-popup, k = 0.05, seed 0, LeNet-300-100 on MNIST, 10 epochs, fp32, 1 thread)
gives its committed test accuracy to the last example. Needs ../shared/data/mnist (the real files)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from supermask import cli

ROOT = Path(__file__).resolve().parents[2]


MNIST = ROOT.parent / "shared" / "data" / "mnist"


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_dir(), reason="needs ../shared/data/mnist")
def test_a_committed_mnist_run_reproduces_to_the_last_example(tmp_path: Path) -> None:
    rows = list(csv.DictReader(open(ROOT / "results" / "methods_mnist" / "runs.csv")))
    committed = next(
        float(r["accuracy"])
        for r in rows
        if r["method"] == "edge-popup" and r["k"] == "0.05" and r["seed"] == "0" and r["epochs"] == "10"
    )
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
    assert result["accuracy"] == committed == 0.847
