"""The methods table of docs/RESULTS.md section 5 from a ``results.csv`` written by ``supermask report``:
one row per method, test accuracy (%) at each k (mean ± sample std over seeds, "(n = N)" when fewer than
3 seeds), Gem-Miner's kept % beside its figures (its threshold keeps fewer than k), and the density
reached by the methods without a k.

    python experiments/methods_table.py results/methods_cifar10/results.csv
"""

from __future__ import annotations

import csv
import sys

K_GRID = ("0.05", "0.1", "0.3", "0.5")
METHODS = (
    "edge-popup",
    "edge-popup-global",
    "biprop",
    "iterand",
    "gem-miner",
    "bernoulli",
    "signed-supermask",
    "threshold",
    "dense",
)
SHOWS_KEPT = {"gem-miner"}  # methods with a k whose kept fraction is not k


def cell(row: dict[str, str]) -> str:
    text = f"{float(row['accuracy_mean']):.2f}"
    if row["accuracy_std"]:
        text += f" ± {float(row['accuracy_std']):.2f}"
    if int(row["seeds"]) < 3:
        text += f" (n = {row['seeds']})"
    return text


def main() -> None:
    rows = list(csv.DictReader(open(sys.argv[1])))
    unknown = sorted({r["method"] for r in rows} - set(METHODS))
    if unknown:
        sys.exit(f"methods_table: {', '.join(unknown)} not in METHODS; add them to experiments/methods_table.py")
    print("| method | " + " | ".join(f"k = {k}" for k in K_GRID) + " | natural density |")
    print("|---|" + "---|" * (len(K_GRID) + 1))
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        by_k = {f"{float(r['k']):g}": r for r in mine if r["k"]}
        if len(by_k) != len([r for r in mine if r["k"]]):
            sys.exit(f"methods_table: {method} has two experiments at one k; report them apart")
        cells = []
        for k in K_GRID:
            row = by_k.get(k)
            kept = f" ({float(row['kept_percent']):.1f})" if row and method in SHOWS_KEPT else ""
            cells.append(cell(row) + kept if row else "")
        natural = [r for r in mine if not r["k"]]
        density = "; ".join(f"{cell(r)} at {float(r['kept_percent']):.1f}%" for r in natural)
        label = f"{method} (kept %)" if method in SHOWS_KEPT else "dense (learned)" if method == "dense" else method
        print(f"| {label} | " + " | ".join(cells) + f" | {density} |")


if __name__ == "__main__":
    main()
