"""The ``supermask`` command line: train, eval, export, sweep, report."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

from supermask import __version__
from supermask.core.config import SupermaskConfigError
from supermask.core.convert import SupermaskError
from supermask.data import DataError


def _cmd_train(args: argparse.Namespace) -> int:
    from supermask.runconfig import load_run_config
    from supermask.train import train

    config, overrides = _split_config(args.items)
    cfg = load_run_config(config, overrides)
    result = train(cfg)
    if result.get("run_dir") and int(__import__("os").environ.get("RANK", "0")) == 0:
        print(f"test accuracy: {result['accuracy']:.4f} ({result['dataset']}, {result['epochs']} epochs)")
        print(f"run directory: {result['run_dir']}")
    return 0


def _split_config(items: list[str]) -> tuple[str | None, list[str]]:
    if items and "=" not in items[0]:
        return items[0], items[1:]
    return None, items


def _cmd_eval(args: argparse.Namespace) -> int:
    from supermask.data import describe
    from supermask.train import build_data, evaluate, load_run, pick_device

    model, cfg, path = load_run(args.path)
    if args.data_root:
        cfg.data.root = args.data_root
    device = pick_device(args.device)
    _, test_loader, *_ = build_data(cfg, device, 0, 1)
    metrics = evaluate(model.to(device), test_loader, device)
    out = {
        "accuracy": metrics["accuracy"],
        "loss": metrics["loss"],
        "examples": metrics["examples"],
        "dataset": describe(cfg.data.name),
        "split": "test",
        "checkpoint": str(path),
        "model": cfg.model.name,
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(f"accuracy {out['accuracy']:.4f} on {out['dataset']} {out['split']} ({out['examples']} examples)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import shutil

    from supermask.core.checkpoint import CONFIG_FILE
    from supermask.train import EXPORT, load_run

    src = Path(args.run_dir)
    if not (src / EXPORT / CONFIG_FILE).is_file() and not (src / CONFIG_FILE).is_file():
        raise SupermaskError(f"{src} has no compact checkpoint yet: export works on a finished run directory")
    load_run(src)  # verifies the checkpoint fully (hash, checksums, architecture)
    out = Path(args.out_dir)
    if out.exists() and any(out.iterdir()):
        raise SupermaskError(f"{out} exists and is not empty; choose a new directory")
    folder = src / EXPORT if (src / EXPORT).is_dir() else src
    shutil.copytree(folder, out, dirs_exist_ok=True)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"exported {out} ({size} bytes)")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    import yaml

    from supermask.runconfig import load_run_config, parse_override
    from supermask.train import CONFIG, RESULT, train

    config, items = _split_config(args.items)
    axes: list[tuple[str, list[str]]] = []
    fixed: list[str] = []
    for item in items:
        key, _ = parse_override(item)
        raw = item.partition("=")[2]
        if "," in raw and not raw.strip().startswith("["):
            axes.append((key, [v.strip() for v in raw.split(",")]))
        else:
            fixed.append(item)
    base = load_run_config(config, fixed)
    out_dir = Path(args.out) if args.out else Path(base.train.out_dir)
    combos = list(itertools.product(*[[f"{k}={v}" for v in values] for k, values in axes]))
    # Check every run's config before running any.
    runs = []
    for combo in combos:
        cfg = load_run_config(config, [*fixed, *combo])
        short = "_".join(c.split(".", 1)[1] for c in combo)
        name = f"{cfg.model.name}-{cfg.supermask.get('method', 'edge-popup')}" + (f"_{short}" if short else "")
        cfg = load_run_config(config, [*fixed, *combo, f"train.out_dir={out_dir}", f"train.run_name={name}"])
        runs.append(cfg)
    done = 0
    for i, cfg in enumerate(runs, 1):
        if (cfg.run_dir() / RESULT).is_file():
            saved = yaml.safe_load((cfg.run_dir() / CONFIG).read_text())
            if saved != cfg.to_dict():
                raise SupermaskError(
                    f"{cfg.run_dir()} holds a finished run with a different config; use another --out or delete it"
                )
            print(f"[{i}/{len(runs)}] {cfg.run_name()}: finished, skipped")
            done += 1
            continue
        print(f"[{i}/{len(runs)}] {cfg.run_name()}")
        result = train(cfg)
        print(f"[{i}/{len(runs)}] {cfg.run_name()}: test accuracy {result['accuracy']:.4f}")
    (out_dir / "sweep.yaml").write_text(yaml.safe_dump({"config": config, "items": items}))
    print(f"sweep of {len(runs)} runs in {out_dir} ({done} were already finished)")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from supermask.report import write_report

    paths = write_report(Path(args.runs_dir), Path(args.out) if args.out else None)
    for p in paths:
        print(p)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="supermask", description=__doc__)
    parser.add_argument("--version", action="version", version=f"supermask {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train one run (no arguments: edge-popup MLP on digits)")
    p.add_argument("items", nargs="*", metavar="[CONFIG.yaml] key=value", help="e.g. supermask.k=0.3 train.epochs=5")
    p.set_defaults(func=_cmd_train)
    p = sub.add_parser("eval", help="evaluate a run directory or an exported checkpoint")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root", default=None, help="override the run's data.root")
    p.set_defaults(func=_cmd_eval)
    p = sub.add_parser("export", help="copy a run's compact seed + mask checkpoint to OUT_DIR")
    p.add_argument("run_dir")
    p.add_argument("out_dir")
    p.set_defaults(func=_cmd_export)
    p = sub.add_parser("sweep", help="a grid of runs: key=a,b,c varies a key (resumable)")
    p.add_argument("items", nargs="*", metavar="[CONFIG.yaml] key=a,b,c")
    p.add_argument("--out", default=None, help="folder of the run directories (default: train.out_dir)")
    p.set_defaults(func=_cmd_sweep)
    p = sub.add_parser("report", help="results table (Markdown, CSV) and accuracy-vs-k plot of a runs folder")
    p.add_argument("runs_dir")
    p.add_argument("--out", default=None, help="output folder (default: RUNS_DIR)")
    p.set_defaults(func=_cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (SupermaskConfigError, SupermaskError, DataError) as exc:
        print(f"supermask: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        from supermask.train import TrainingError

        if isinstance(exc, TrainingError):
            print(f"supermask: error: {exc}", file=sys.stderr)
            return 3
        raise


if __name__ == "__main__":
    sys.exit(main())
