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
    """Mean and std of accuracy over seeds, per (dataset, model, width, method, init, k); std is None for one seed."""
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
                "accuracy_std": 100 * statistics.stdev(accs) if len(accs) > 1 else None,  # one seed: unknown
            }
        )
    return out


def _mean_std(mean: float, std: float | None) -> str:
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def write_report(runs_dir: Path, out: Path | None = None) -> list[Path]:
    """Write ``results.md``, ``results.csv``, ``runs.csv``, ``results.png`` and, when at most
    :data:`MAX_CURVES` runs of 5 or more epochs left their ``metrics.jsonl``, ``curves.png``; return their paths."""
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
            f"{_mean_std(s['accuracy_mean'], s['accuracy_std'])} |"
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
    devices = sorted({str(r.get("hardware") or r.get("device", "?")) for r in rows})
    paths = [out / "results.md", out / "results.csv", out / "runs.csv", plot(summary, out / "results.png", devices)]
    curves = learning_curves(runs_dir)
    if curves and len(curves) <= MAX_CURVES:
        datasets = ", ".join(sorted({str(r["dataset"]) for r in rows}))
        paths.append(plot_curves(curves, out / "curves.png", f"{datasets}: learning curves", devices))
    return paths


MAX_CURVES = 12  # more would not be readable in one plot


def learning_curves(runs_dir: Path, min_epochs: int = 5) -> dict[str, list[dict[str, Any]]]:
    """Per-epoch metrics (``metrics.jsonl``) of each finished run of at least ``min_epochs``, by run name."""
    curves = {}
    for result in sorted(runs_dir.rglob("result.json")):
        metrics = result.parent / "metrics.jsonl"
        if not metrics.is_file():
            continue
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        if len(rows) >= min_epochs:
            curves[str(result.parent.relative_to(runs_dir))] = rows
    return curves


def plot_curves(
    curves: dict[str, list[dict[str, Any]]],
    path: Path,
    title: str = "learning curves",
    devices: list[str] | None = None,
) -> Path:
    """Test (solid) and train (dotted) accuracy against epoch, one colour per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (name, rows) in enumerate(curves.items()):
        epochs = [r["epoch"] for r in rows]
        colour = f"C{i % 10}"
        ax.plot(epochs, [100 * r["test_accuracy"] for r in rows], color=colour, label=f"{name} (test)")
        ax.plot(epochs, [100 * r["train_accuracy"] for r in rows], color=colour, linestyle=":", label="train")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    where = f" on {'/'.join(devices)}" if devices else ""
    ax.set_title(f"{title}{where}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


MARKERS = {"signed_constant": "o", "signed_constant+scale_fan": "^", "kaiming_normal": "s"}


def plot(summary: list[dict[str, Any]], path: Path, devices: list[str] | None = None) -> Path:
    """Accuracy against % of weights kept, one colour per (model, width): a line per method and init,
    dense as a dashed line. When a model was run at several widths, a second panel plots accuracy
    against width for edge-popup at k = 0.5 (the paper's Figure 3 setting) and dense."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    widths: dict[Any, set[float]] = defaultdict(set)
    for s in summary:
        widths[s["model"]].add(s["width"])
    width_panel = any(len(w) > 1 for w in widths.values())
    fig, axes = plt.subplots(1, 2 if width_panel else 1, figsize=(12 if width_panel else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    groups = sorted({(s["model"], s["width"]) for s in summary}, key=str)
    colour = {g: plt.get_cmap("tab10")(i % 10) for i, g in enumerate(groups)}
    lines: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for s in summary:
        lines[(s["dataset"], s["model"], s["width"], s["method"], s["weight_init"])].append(s)
    for (_dataset, model, width, method, init), pts in sorted(lines.items(), key=lambda kv: str(kv[0])):
        pts.sort(key=lambda p: p["kept_percent"])
        label = f"{model}" + (f" w{width}" if width != 1.0 else "") + f" {method}"
        label += f" ({init})" if method != "dense" else ""
        xs = [p["kept_percent"] for p in pts]
        ys = [p["accuracy_mean"] for p in pts]
        es = [p["accuracy_std"] or 0.0 for p in pts]
        c = colour[(model, width)]
        if method == "dense":
            ax.axhline(ys[0], linestyle="--", linewidth=1, label=label, color=c)
        else:
            marker = "D" if method == "bernoulli" else MARKERS.get(init, "v")
            style = "-" if len(pts) > 1 else ""
            ax.errorbar(xs, ys, yerr=es, marker=marker, linestyle=style, label=label, capsize=3, color=c)
    ax.set_xlabel("% of weights kept (k)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if width_panel:
        wax = axes[0][1]
        for model in sorted(m for m, w in widths.items() if len(w) > 1):
            for method, keep in (
                ("edge-popup k=0.5", lambda s: s["method"] == "edge-popup" and s["k"] == 0.5),
                ("dense", lambda s: s["method"] == "dense"),
            ):
                plain = ("signed_constant", "learned")  # not kaiming_normal or scale_fan: one line each
                pts = sorted(
                    (s for s in summary if s["model"] == model and keep(s) and s["weight_init"] in plain),
                    key=lambda p: p["width"],
                )
                if pts:
                    wax.errorbar(
                        [p["width"] for p in pts],
                        [p["accuracy_mean"] for p in pts],
                        yerr=[p["accuracy_std"] or 0.0 for p in pts],
                        marker="o",
                        linestyle="--" if method == "dense" else "-",
                        label=f"{model} {method}",
                        capsize=3,
                    )
        wax.set_xscale("log", base=2)
        all_widths = sorted(set().union(*widths.values()))
        wax.set_xticks(all_widths, labels=[f"{w:g}" for w in all_widths])
        wax.set_xlabel("width multiplier")
        wax.set_ylabel("test accuracy (%)")
        wax.grid(alpha=0.3)
        wax.legend(fontsize=7)
    datasets = sorted({s["dataset"] for s in summary})
    epochs = sorted({s["epochs"] for s in summary})
    where = f", on {'/'.join(devices)}" if devices else ""
    fig.suptitle(f"{', '.join(datasets)}: {'/'.join(map(str, epochs))} epochs{where}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
