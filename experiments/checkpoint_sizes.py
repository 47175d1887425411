"""Bytes of each finished run's exported checkpoint (``RUN/supermask``), as CSV on stdout: what a task
costs to store. Usage: python experiments/checkpoint_sizes.py RUNS_DIR > RUNS_DIR/../checkpoint_bytes.csv

A masks-only checkpoint holds the masks (1 bit per converted weight), what the base model lacks (a new
head, learned norms) and fingerprints of the base weights; a dense run's holds every weight in fp32.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def main() -> None:
    runs = Path(sys.argv[1])
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["run", "method", "weight_init", "accuracy", "checkpoint_bytes", "tensors_bytes", "json_bytes"])
    for result in sorted(runs.rglob("result.json")):
        export = result.parent / "supermask"
        if not export.is_dir():
            continue
        files = {f.name: f.stat().st_size for f in export.iterdir() if f.is_file()}
        tensors = sum(size for name, size in files.items() if name.endswith(".safetensors"))
        row = json.loads(result.read_text())
        out.writerow(
            [result.parent.name, row.get("method"), row.get("weight_init"), row.get("accuracy"),
             sum(files.values()), tensors, files.get("supermask.json", 0)]
        )  # fmt: skip


if __name__ == "__main__":
    main()
