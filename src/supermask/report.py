"""Results tables and the accuracy-vs-kept-fraction plot of a folder of runs.

Runs are grouped on their whole resolved config except the seed (and the bookkeeping keys of
:data:`supermask.runconfig.BOOKKEEPING_KEYS`): two runs share a row only when they are the same
experiment. A row's n is its number of distinct seeds and its ± is the standard deviation over them.
Every setting that differs between rows is shown, so no two rows look alike.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

from supermask.errors import SupermaskError

# The settings every table shows in columns of their own (flattened experiment-key names).
SHOWN = {
    "data.name": "data set",
    "model.name": "model",
    "model.width": "width",
    "supermask.method": "method",
    "supermask.weight_init": "weight init",
    "supermask.k": "k",
    "train.epochs": "epochs",
}


def _resolved_config(result: dict[str, Any], folder: Path) -> dict[str, Any] | None:
    """The run's full resolved config: from result.json, else its config.yaml; None when neither has one."""
    from supermask.runconfig import from_dict, read_yaml_file

    raw = result.get("config")
    if not isinstance(raw, dict) and (folder / "config.yaml").is_file():
        try:
            raw = read_yaml_file(folder / "config.yaml")
        except SupermaskError:
            raw = None
    if not isinstance(raw, dict):
        return None
    try:
        return from_dict(raw).to_dict()
    except SupermaskError:
        return None


def _flatten(config: dict[str, Any]) -> dict[str, Any]:
    return {f"{section}.{key}": value for section, values in config.items() for key, value in values.items()}


def _files_below(runs_dirs: Path | list[Path], name: str) -> list[Path]:
    """Every file called ``name`` below the folders, each once (folders may nest or repeat)."""
    dirs = [runs_dirs] if isinstance(runs_dirs, Path) else runs_dirs
    seen: dict[Path, Path] = {}
    for d in dirs:
        for path in sorted(d.rglob(name)):
            seen.setdefault(path.resolve(), path)
    return list(seen.values())


def _result_files(runs_dirs: Path | list[Path]) -> list[Path]:
    """Every ``result.json`` below the folders, each once."""
    return _files_below(runs_dirs, "result.json")


def unfinished_runs(runs_dirs: Path | list[Path]) -> list[Path]:
    """Run directories below the folders that started (``config.yaml`` beside ``metrics.jsonl`` or
    ``train_state.pt``, both written when training starts) but have no ``result.json`` yet: running,
    stopped or failed. A report leaves them out and says so."""
    runs = [config.parent for config in _files_below(runs_dirs, "config.yaml")]
    return [
        run
        for run in runs
        if ((run / "metrics.jsonl").exists() or (run / "train_state.pt").exists())
        and not (run / "result.json").exists()
    ]


def collect(runs_dir: Path | list[Path]) -> list[dict[str, Any]]:
    """Every ``result.json`` below ``runs_dir`` (one folder or several), with ``experiment``: its
    flattened experiment key."""
    from supermask.precision import recorded_precision
    from supermask.runconfig import experiment_key

    rows = []
    for path in _result_files(runs_dir):
        row = _read_result(path)
        config = _resolved_config(row, path.parent)
        if config is not None:
            row["experiment"] = _flatten(experiment_key(config))
            row["experiment"]["train.precision"] = recorded_precision(row, config)
        else:  # a result without its config (written before configs were kept): its own fields
            row["experiment"] = {
                "data.name": row.get("dataset"),
                "model.name": row.get("model"),
                "model.width": row.get("width"),
                "supermask.method": row.get("method"),
                "supermask.weight_init": row.get("weight_init"),
                "supermask.scale_fan": row.get("scale_fan", False),
                "supermask.k": row.get("k") if _uses_k(row.get("method")) else None,
                "train.epochs": row.get("epochs"),
            }
        rows.append(row)
    return rows


def _read_result(path: Path) -> dict[str, Any]:
    """A run's ``result.json``, its figures checked: a file that cannot be read or holds an impossible
    figure stops the report (naming it) instead of being left out or averaged in."""
    from supermask.fileio import read_json

    try:
        row = read_json(path)
    except SupermaskError as exc:
        raise SupermaskError(
            f"{path} cannot be read as a run's result ({exc}); restore it or move its run away"
        ) from exc
    if not isinstance(row, dict):
        raise SupermaskError(f"{path} is not a run's result (a JSON object); restore it or move its run away")
    for key in ("accuracy", "kept_fraction"):
        value = row.get(key)
        if not _is_fraction(value):
            raise SupermaskError(
                f"{path}: {key}={value!r} is not a fraction (0 <= x <= 1); restore the file or move its run away"
            )
    return row


def _is_fraction(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0


def _varying(experiments: list[dict[str, Any]]) -> list[str]:
    """Keys whose value differs between experiments (in a stable order), beyond those shown in columns."""
    keys: list[str] = []
    for e in experiments:
        keys.extend(k for k in e if k not in keys)
    return [k for k in keys if k not in SHOWN and len({json.dumps(e.get(k), default=str) for e in experiments}) > 1]


def _label(value: Any) -> str:
    return (
        json.dumps(value)
        if isinstance(value, (list, dict))
        else str(value).lower()
        if isinstance(value, bool)
        else str(value)
    )


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per experiment: mean and std of test accuracy over its distinct seeds (std None for one
    seed). Runs of one experiment and seed made twice (e.g. on two machines) are averaged into one value."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[json.dumps(r["experiment"], sort_keys=True, default=str)].append(r)
    experiments = [rs[0]["experiment"] for rs in groups.values()]
    varying = _varying(experiments)
    out = []
    for rs in groups.values():
        e = rs[0]["experiment"]
        by_seed: dict[Any, list[float]] = defaultdict(list)
        for r in rs:
            by_seed[r.get("seed")].append(float(r["accuracy"]))
        accs = [statistics.mean(v) for v in by_seed.values()]
        method = e.get("supermask.method")
        out.append(
            {
                "dataset": rs[0].get("dataset", e.get("data.name")),
                "model": e.get("model.name"),
                "width": e.get("model.width"),
                "method": method,
                "weight_init": e.get("supermask.weight_init")
                if _has_scores(method)
                else f"learned from {e.get('supermask.weight_init')}",
                "k": e.get("supermask.k") if _uses_k(method) else None,
                "epochs": e.get("train.epochs"),
                "settings": "; ".join(f"{k}={_label(e.get(k))}" for k in varying),
                "kept_percent": 100 * statistics.mean(float(r["kept_fraction"]) for r in rs),
                "seeds": len(by_seed),
                "runs": len(rs),
                "accuracy_mean": 100 * statistics.mean(accs),
                "accuracy_std": 100 * statistics.stdev(accs) if len(accs) > 1 else None,  # one seed: unknown
                **{f"setting:{k}": e.get(k) for k in varying},
            }
        )
    out.sort(
        key=lambda s: (
            [str(s[k]) for k in ("dataset", "model", "width", "method", "weight_init", "settings")]
            + [s["kept_percent"]]
        )
    )
    return out


def _uses_k(method: Any) -> bool:
    """Whether a method's mask is set by k (an unknown method: assume so, k is then shown)."""
    from supermask.core.methods import method_class

    try:
        return bool(method_class(method).uses_k)
    except SupermaskError:
        return True


def _has_scores(method: Any) -> bool:
    """False for a learned-weights baseline (drawn as a horizontal line)."""
    from supermask.core.methods import method_class

    try:
        return bool(method_class(method).has_scores)
    except SupermaskError:
        return True


def _mean_std(mean: float, std: float | None) -> str:
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def write_report(runs_dir: Path | list[Path], out: Path | None = None) -> list[Path]:
    """Write ``results.md``, ``results.csv``, ``runs.csv``, ``results.png`` and, when at most
    :data:`MAX_CURVES` runs of 5 or more epochs left their ``metrics.jsonl``, ``curves.png``; return their
    paths. ``runs_dir``: one folder of runs or several (then ``out`` is required)."""
    from supermask.fileio import make_dirs, write_all

    dirs = [runs_dir] if isinstance(runs_dir, Path) else list(runs_dir)
    if out is None and len(dirs) != 1:
        raise SupermaskError("a report over several run folders needs --out DIR (where to write it)")
    missing = [str(d) for d in dirs if not Path(d).is_dir()]
    if missing:  # never a report of the folders that exist, silently without the others
        raise SupermaskError(f"no such run folder: {', '.join(missing)}")
    rows = collect(dirs)
    if not rows:
        raise SupermaskError(f"no finished runs (result.json) below {', '.join(map(str, dirs))}")
    summary = summarise(rows)
    out = make_dirs(out or dirs[0])
    files: dict[Path, bytes | str] = {}  # every output made first, then all written in one step
    fields = [k for k in summary[0] if not k.startswith("setting:")]
    files[out / "results.csv"] = _csv(summary, fields)
    lines = [
        "| data set | model | width | method | weight init | other settings | k | % kept | epochs | n | test accuracy (%) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        k = "-" if s["k"] is None else f"{s['k']:g}"
        lines.append(
            f"| {s['dataset']} | {s['model']} | {s['width']} | {s['method']} | {s['weight_init']} | "
            f"{s['settings'] or '-'} | {k} | {s['kept_percent']:.1f} | {s['epochs']} | {s['seeds']} | "
            f"{_mean_std(s['accuracy_mean'], s['accuracy_std'])} |"
        )
    lines.append("")
    lines.append(
        "Each row is one experiment (runs grouped on their whole config except the seed); n is its number of "
        "distinct seeds, and ± is the sample standard deviation (n - 1 in the denominator) over those n seeds "
        "(none for n = 1)."
    )
    unfinished = unfinished_runs(dirs)
    if unfinished:  # a table made mid-sweep must not pass for the whole grid
        names = ", ".join(r.name for r in unfinished[:10]) + (" and more" if len(unfinished) > 10 else "")
        lines.append("")
        lines.append(f"Not in the table: {len(unfinished)} unfinished run(s) (no result.json yet): {names}.")
    files[out / "results.md"] = "\n".join(lines) + "\n"
    varying = _varying([r["experiment"] for r in rows])
    run_fields = ["dataset", "model", "width", "method", "weight_init", "k", *varying, "seed", "epochs"]
    run_fields += ["kept_fraction", "accuracy", "hardware"]
    flat = [{**{k: r["experiment"].get(k) for k in varying}, **r} for r in rows]
    flat.sort(key=lambda r: [str(r.get(k)) for k in run_fields])
    files[out / "runs.csv"] = _csv(flat, run_fields)  # one row per run: the data behind the summary
    devices = sorted({str(r.get("hardware") or r.get("device", "?")) for r in rows})
    curves = {name: rows for d in dirs for name, rows in learning_curves(d).items()}
    if plotting_available():
        for fmt in ("png", "pdf", "svg"):  # the PDF and SVG for a paper
            files[out / f"results.{fmt}"] = render_plot(summary, devices, fmt)
        files[out / "results.caption.txt"] = caption(summary, devices)
        if curves and len(curves) <= MAX_CURVES:
            datasets = ", ".join(sorted({str(r["dataset"]) for r in rows}))
            files[out / "curves.png"] = render_curves(curves, f"{datasets}: learning curves", devices)
    write_all(files)
    return list(files)


def plotting_available() -> bool:
    """Whether matplotlib is installed (the ``train`` extra): without it the report is its tables."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _png(fig: Any) -> bytes:
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, dpi=120, format="png")
    plt.close(fig)
    return buf.getvalue()


def _csv(rows: list[dict[str, Any]], fields: list[str]) -> str:
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


MAX_CURVES = 12  # more would not be readable in one plot


def learning_curves(runs_dir: Path, min_epochs: int = 5) -> dict[str, list[dict[str, Any]]]:
    """Per-epoch metrics (``metrics.jsonl``) of each finished run of at least ``min_epochs``, by run name."""
    curves = {}
    for result in sorted(runs_dir.rglob("result.json")):
        metrics = result.parent / "metrics.jsonl"
        if not metrics.is_file():
            continue
        try:
            text = metrics.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise SupermaskError(f"{metrics} cannot be read ({exc}); restore the file") from exc
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SupermaskError(f"{metrics} line {number} cannot be read ({exc}); restore the file") from exc
            if not isinstance(row, dict):
                raise SupermaskError(f"{metrics} line {number} is not an epoch's metrics (a JSON object)")
            rows.append(row)
        if len(rows) >= min_epochs:
            curves[str(result.parent.relative_to(runs_dir))] = rows
    return curves


def render_curves(
    curves: dict[str, list[dict[str, Any]]],
    title: str = "learning curves",
    devices: list[str] | None = None,
) -> bytes:
    """Test (solid) and train (dotted) accuracy against epoch, one colour per run, as PNG bytes. Epochs
    without an accuracy (a split-task run records one per task) are left out of the line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (name, rows) in enumerate(curves.items()):
        colour = f"C{i % 10}"
        for key, style, label in (("test_accuracy", "-", f"{name} (test)"), ("train_accuracy", ":", "train")):
            points = [(r["epoch"], 100 * r[key]) for r in rows if _is_number(r.get("epoch")) and _is_number(r.get(key))]
            if points:
                ax.plot(*zip(*points), color=colour, linestyle=style, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    where = f" on {', '.join(devices)}" if devices else ""
    ax.set_title(textwrap.fill(f"{title}{where}", width=95), fontsize=9)  # several hosts: wrapped, not cut
    fig.tight_layout()
    return _png(fig)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")


def _series(summary: list[dict[str, Any]]) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """Rows of one line: the same experiment but for k (the x axis)."""
    lines: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for s in summary:
        key = (s["dataset"], s["model"], s["width"], s["method"], s["weight_init"], s["epochs"], s["settings"])
        lines[key].append(s)
    return lines


def _short(settings: str) -> str:
    """``optim.lr=0.1; supermask.scale_fan=true`` -> ``lr=0.1; scale_fan=true`` (for legends)."""
    return "; ".join(part.split(".", 1)[-1] for part in settings.split("; "))


def plot(summary: list[dict[str, Any]], path: Path, devices: list[str] | None = None) -> Path:
    """:func:`render_plot` written to ``path`` (atomically)."""
    from supermask.fileio import atomic_write

    atomic_write(path, render_plot(summary, devices))
    return path


def render_plot(summary: list[dict[str, Any]], devices: list[str] | None = None, fmt: str = "png") -> bytes:
    """Accuracy against % of weights kept, as a figure to publish (``fmt``: png, pdf or svg): the title
    names the data set and schedule (the hardware goes to the caption, :func:`caption`); one line per
    series (same experiment but for k), each with its own colour, marker and line style so that
    overlapping series stay apart; the legend, outside the axes, names only what differs between the
    series; error bars (std over the seeds) only where n > 1; a learned dense baseline as a dashed
    horizontal line. When a model was run at several widths, a second panel plots accuracy against width
    (the paper's Figure 3 runs k = 0.5 and dense)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    widths: dict[Any, set[float]] = defaultdict(set)
    for s in summary:
        widths[s["model"]].add(s["width"])
    width_panel = any(len(w) > 1 for w in widths.values())
    series = sorted(_series(summary).items(), key=lambda kv: str(kv[0]))
    labels = _legend_labels([key for key, _ in series])
    fig, axes = plt.subplots(1, 2 if width_panel else 1, figsize=(13 if width_panel else 8.5, 4.8), squeeze=False)
    ax = axes[0][0]
    palette = plt.get_cmap("tab20" if len(series) > 10 else "tab10")
    styles = ("-", "--", "-.", ":")
    span = max((p["kept_percent"] for _, pts in series for p in pts), default=1.0) or 1.0
    drawn: set[tuple[float, float]] = set()
    for i, ((_d, _model, _width, method, _init, _e, _settings), pts) in enumerate(series):
        pts.sort(key=lambda p: p["kept_percent"])
        colour = palette(i % palette.N)
        points = {(round(p["kept_percent"], 6), round(p["accuracy_mean"], 6)) for p in pts}
        shift = 0.006 * span * (i % 5 + 1) if points & drawn else 0.0  # a series on top of another: moved apart
        drawn |= points
        xs = [p["kept_percent"] + shift for p in pts]
        ys = [p["accuracy_mean"] for p in pts]
        es = [p["accuracy_std"] if p["seeds"] > 1 and p["accuracy_std"] is not None else math.nan for p in pts]
        if not _has_scores(method) and len(pts) == 1:
            ax.axhline(ys[0], linestyle="--", linewidth=1.2, label=labels[i], color=colour)
            continue
        marker = MARKERS[i % len(MARKERS)]
        style = styles[i % len(styles)] if len(pts) > 1 else ""
        if any(e == e for e in es):  # error bars only where there are several seeds
            ax.errorbar(xs, ys, yerr=es, marker=marker, linestyle=style, label=labels[i], capsize=3, color=colour,
                        markerfacecolor="none" if i % 2 else colour)  # fmt: skip
        else:
            ax.plot(xs, ys, marker=marker, linestyle=style, label=labels[i], color=colour,
                    markerfacecolor="none" if i % 2 else colour)  # fmt: skip
    ax.set_xlabel("% of weights kept (k)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    if width_panel:
        wax = axes[0][1]
        by_width: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
        for s in summary:  # one line per experiment but for the width (k = 0.5 is the paper's Figure 3)
            by_width[(s["model"], s["method"], s["weight_init"], s["k"], s["settings"])].append(s)
        for (model, method, init, k, settings), pts in sorted(by_width.items(), key=lambda kv: str(kv[0])):
            if len({p["width"] for p in pts}) < 2:
                continue
            pts.sort(key=lambda p: p["width"])
            label = f"{model} {method}" + (f" k={k}" if k is not None else "")
            label += f" ({init})" if _has_scores(method) else ""
            label += f" [{_short(settings)}]" if settings else ""
            wax.errorbar(
                [p["width"] for p in pts],
                [p["accuracy_mean"] for p in pts],
                yerr=[p["accuracy_std"] if p["seeds"] > 1 and p["accuracy_std"] is not None else math.nan for p in pts],
                marker="o",
                linestyle="-" if _has_scores(method) else "--",
                label=label,
                capsize=3,
            )
        wax.set_xscale("log", base=2)
        all_widths = sorted(set().union(*widths.values()))
        wax.set_xticks(all_widths, labels=[f"{w:g}" for w in all_widths])
        wax.set_xlabel("width multiplier")
        wax.set_ylabel("test accuracy (%)")
        wax.grid(alpha=0.3)
        wax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    ax.set_title(_title(summary), fontsize=10)
    fig.tight_layout()
    return _figure(fig, fmt)


def _title(summary: list[dict[str, Any]]) -> str:
    """The data set(s) and the schedule: what a reader needs to read the axes."""
    datasets = ", ".join(sorted({str(s["dataset"]) for s in summary}))
    epochs = "/".join(sorted({str(s["epochs"]) for s in summary}, key=lambda e: (len(e), e)))
    return f"{datasets}, {epochs} {'epoch' if epochs == '1' else 'epochs'}"


def caption(summary: list[dict[str, Any]], devices: list[str] | None = None) -> str:
    """The figure's caption (``results.caption.txt``): what the points, lines and bars are, and where
    the runs ran (kept out of the plot)."""
    seeds = sorted({s["seeds"] for s in summary})
    bars = (
        "Error bars: sample standard deviation over the n seeds of a point (none where n = 1)."
        if max(seeds) > 1
        else "One seed per point (n = 1): no error bars."
    )
    where = f" Runs on {', '.join(devices)}." if devices else ""
    return (
        f"Test accuracy against the percentage of weights kept, {_title(summary)}. Each point is the mean over "
        f"n = {'/'.join(map(str, seeds))} seeds; each line one experiment but for k; a dashed horizontal line is "
        f"a learned dense baseline. {bars} A series whose points coincide with another's is drawn shifted right by "
        f"under 3% of the axis, so that both stay visible.{where}\n"
    )


def _legend_labels(keys: list[tuple[Any, ...]]) -> list[str]:
    """One label per series naming only what differs between the series (model, width, method, weight
    init, epochs, settings), the method always."""
    parts: list[dict[str, Any]] = []
    for _d, model, width, method, init, epochs, settings in keys:
        parts.append(
            {
                "model": str(model),
                "width": f"w{width:g}" if isinstance(width, (int, float)) else str(width),
                "method": str(method),
                "init": f"({init})" if _has_scores(method) else "",
                "epochs": f"{epochs} ep",
                "settings": dict(p.split("=", 1) for p in _short(settings).split("; ") if "=" in p) if settings else {},
            }
        )
    shown = [
        k for k in ("model", "width", "method", "init", "epochs") if len({p[k] for p in parts}) > 1 or k == "method"
    ]
    setting_keys = sorted({k for p in parts for k in p["settings"]})
    differing = [k for k in setting_keys if len({p["settings"][k] for p in parts if k in p["settings"]}) > 1]
    labels = []
    for p in parts:
        text = " ".join(p[k] for k in shown if p[k])
        extra = "; ".join(f"{k}={p['settings'][k]}" for k in differing if k in p["settings"])
        labels.append(f"{text} [{extra}]" if extra else text)
    return labels


def _figure(fig: Any, fmt: str) -> bytes:
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    # no creation date or software version in the file: the same runs give the same bytes
    metadata = {"png": {"Software": None}, "pdf": {"CreationDate": None}, "svg": {"Date": None}}.get(fmt)
    with plt.rc_context({"svg.hashsalt": "supermask"}):  # SVG element ids from a fixed salt, not a random one
        fig.savefig(buf, dpi=150, format=fmt, bbox_inches="tight", metadata=metadata)
    plt.close(fig)
    return buf.getvalue()
