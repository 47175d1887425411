"""Results tables and the accuracy-vs-kept-fraction plot of a folder of runs."""

from __future__ import annotations

import csv
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from supermask.core.convert import SupermaskError


def collect(runs_dir: Path) -> list[dict[str, Any]]:
    """Every ``result.json`` below ``runs_dir``."""
    rows = []
    for path in sorted(runs_dir.rglob("result.json")):
        try:
            rows.append(json.loads(path.read_text()))
        except json.JSONDecodeError:
            continue
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std of accuracy over seeds, per (dataset, model, width, method, init, k)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        k = r["k"] if str(r["method"]).startswith("edge-popup") else None
        init = r["weight_init"] + ("+scale_fan" if r.get("scale_fan") else "")
        groups[(r["dataset"], r["model"], r["width"], r["method"], init, k, r["epochs"])].append(r)
    out = []
    for (dataset, model, width, method, init, k, epochs), rs in sorted(groups.items(), key=lambda kv: str(kv[0])):
        accs = [r["accuracy"] for r in rs]
        kept = [r["kept_fraction"] for r in rs]
        out.append(
            {
                "dataset": dataset,
                "model": model,
                "width": width,
                "method": method,
                "weight_init": init if method != "dense" else "learned",
                "k": k,
                "epochs": epochs,
                "kept_percent": 100 * statistics.mean(kept),
                "seeds": len(rs),
                "accuracy_mean": 100 * statistics.mean(accs),
                "accuracy_std": 100 * statistics.stdev(accs) if len(accs) > 1 else 0.0,
            }
        )
    return out


def write_report(runs_dir: Path, out: Path | None = None) -> list[Path]:
    """Write ``results.md``, ``results.csv`` and ``results.png``; return their paths."""
    rows = collect(runs_dir)
    if not rows:
        raise SupermaskError(f"no finished runs (result.json) below {runs_dir}")
    summary = summarise(rows)
    out = out or runs_dir
    out.mkdir(parents=True, exist_ok=True)
    fields = list(summary[0])
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(summary)
    lines = [
        "| data set | model | width | method | weight init | % kept | epochs | seeds | test accuracy (%) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['dataset']} | {s['model']} | {s['width']} | {s['method']} | {s['weight_init']} | "
            f"{s['kept_percent']:.1f} | {s['epochs']} | {s['seeds']} | "
            f"{s['accuracy_mean']:.2f} ± {s['accuracy_std']:.2f} |"
        )
    (out / "results.md").write_text("\n".join(lines) + "\n")
    run_fields = [
        "dataset",
        "model",
        "width",
        "method",
        "weight_init",
        "k",
        "seed",
        "epochs",
        "kept_fraction",
        "accuracy",
    ]
    with open(out / "runs.csv", "w", newline="") as f:  # one row per run: the data behind the summary
        writer = csv.DictWriter(f, fieldnames=run_fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: [str(r.get(k)) for k in run_fields]))
    devices = sorted({str(r.get("device", "?")) for r in rows})
    return [out / "results.md", out / "results.csv", out / "runs.csv", plot(summary, out / "results.png", devices)]


def plot(summary: list[dict[str, Any]], path: Path, devices: list[str] | None = None) -> Path:
    """Accuracy against % of weights kept: one line per (model, method, init); dense as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    lines: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for s in summary:
        lines[(s["dataset"], s["model"], s["width"], s["method"], s["weight_init"])].append(s)
    for (_dataset, model, width, method, init), pts in sorted(lines.items(), key=lambda kv: str(kv[0])):
        pts.sort(key=lambda p: p["kept_percent"])
        label = (
            f"{model}"
            + (f" w{width}" if width != 1.0 else "")
            + f" {method}"
            + (f" ({init})" if method != "dense" else "")
        )
        xs = [p["kept_percent"] for p in pts]
        ys = [p["accuracy_mean"] for p in pts]
        es = [p["accuracy_std"] for p in pts]
        if method == "dense":
            ax.axhline(ys[0], linestyle="--", linewidth=1, label=label, color="k" if len(lines) < 8 else None)
        elif len(pts) == 1:
            ax.errorbar(xs, ys, yerr=es, marker="s", linestyle="", label=label, capsize=3)
        else:
            ax.errorbar(xs, ys, yerr=es, marker="o", label=label, capsize=3)
    datasets = sorted({s["dataset"] for s in summary})
    ax.set_xlabel("% of weights kept (k)")
    ax.set_ylabel("test accuracy (%)")
    epochs = sorted({s["epochs"] for s in summary})
    where = f", on {'/'.join(devices)}" if devices else ""
    ax.set_title(f"{', '.join(datasets)}: {'/'.join(map(str, epochs))} epochs{where}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
