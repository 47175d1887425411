"""The transfer table of docs/RESULTS.md section 6 from ``checkpoint_bytes.csv`` (experiments/checkpoint_sizes.py):
each variant's test accuracy on classes 5-9 (mean ± std over its seeds) and the bytes its checkpoint adds.

    python experiments/transfer_table.py results/transfer_cifar10/checkpoint_bytes.csv
"""

from __future__ import annotations

import csv
import statistics
import sys

VARIANTS = {
    "base": "base: dense on classes 0-4 (tested on classes 0-4)",
    "a-threshold": "(a) threshold mask over the trained weights",
    "b-edge-popup": "(b) edge-popup mask over them, k = 0.5",
    "c-fine-tune": "(c) full fine-tuning",
    "d-edge-popup-random": "(d) edge-popup mask over random weights, k = 0.5",
    "e-scratch": "(e) dense from scratch",
}


def main() -> None:
    rows = list(csv.DictReader(open(sys.argv[1])))
    print("| variant | test accuracy (%) | n | checkpoint bytes |")
    print("|---|---|---|---|")
    for key, label in VARIANTS.items():
        runs = [r for r in rows if r["run"].rsplit("-s", 1)[0] == key]
        if not runs:
            continue
        accs = [100 * float(r["accuracy"]) for r in runs]
        spread = f" ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else ""
        print(f"| {label} | {statistics.mean(accs):.2f}{spread} | {len(accs)} | {int(runs[0]['checkpoint_bytes']):,} |")


if __name__ == "__main__":
    main()
