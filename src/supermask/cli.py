"""The ``supermask`` command line: train, eval, export, sweep, report."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, NoReturn

from supermask import __version__
from supermask.core.values import shorten
from supermask.errors import (
    EXIT_RESUMABLE,
    RunBusyError,
    RunInterrupted,
    StorageError,
    SupermaskConfigError,
    SupermaskError,
)
from supermask.fileio import read_json
from supermask.sweep import EXIT_BUSY, one_line, run_sweep, split_config
from supermask.sweep import _parse_shard as _parse_shard  # noqa: F401 - the names tests reach through cli
from supermask.sweep import _sweep_runs as _sweep_runs  # noqa: F401


def _cmd_train(args: argparse.Namespace) -> int:
    from supermask.runconfig import load_run_config, to_yaml
    from supermask.train import train

    config, overrides = split_config(args.items)
    cfg = load_run_config(config, overrides)
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    result = train(cfg)
    if result.get("run_dir") and int(__import__("os").environ.get("RANK", "0")) == 0:
        steps = result.get("steps_per_epoch")  # absent for split-task runs: their tasks' sizes differ
        cut = result.get("config", {}).get("train", {}).get("max_steps")
        of = (
            ""
            if not cut
            else f" of {steps} steps (train.max_steps)"
            if steps
            else f" of at most {cut} steps (train.max_steps)"
        )
        print(f"test accuracy: {result['accuracy']:.4f} ({result['dataset']}, {result['epochs']} epochs{of})")
        print(f"run directory: {result['run_dir']}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from supermask.core.inspection import set_eval_draw
    from supermask.data import DATASETS, describe
    from supermask.precision import configured_device
    from supermask.runconfig import check_device
    from supermask.train import build_data, evaluate, load_run, root_ignored

    if args.draws < 1:
        raise SupermaskConfigError(f"--draws {args.draws}: give a number of mask draws >= 1")
    model, cfg, path = load_run(args.path, args.trust_model_code, args.model, with_scores=args.draws > 1)
    if args.draws > 1:
        set_eval_draw(model, 0)  # a clear error before any data is read where draws cannot differ
    if cfg.data.tasks > 1:
        raise SupermaskError(
            f"{path} is a run over {cfg.data.tasks} tasks: its result.json holds the accuracy of each task and "
            "of task inference; in Python, supermask.load it and supermask.set_task(model, i) to use task i"
        )
    if args.data_root:
        cfg.data.root = args.data_root
        if not DATASETS[cfg.data.name].reads_root:
            print(root_ignored(cfg.data.name, args.data_root), file=sys.stderr)
    check_device(args.device, "--device")
    device = configured_device(args.device)
    precision, note = _eval_precision(args.precision, path, cfg, device)
    channels_last = _eval_channels_last(path, cfg, device)
    _, test_loader, *_ = build_data(cfg, device, 0, 1)
    model = model.to(device)
    if channels_last:  # the layout the run evaluated in: its last bits, and so its accuracy, repeat
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    runs = []
    for draw in range(args.draws):  # draw 0: the mask the run evaluated and exported
        if args.draws > 1:
            set_eval_draw(model, draw)
        runs.append(evaluate(model, test_loader, device, precision == "bf16"))
    metrics = runs[0]
    out: dict[str, Any] = {
        "accuracy": statistics.fmean(r["accuracy"] for r in runs),
        "loss": statistics.fmean(r["loss"] for r in runs),
        "examples": metrics["examples"],
        "dataset": describe(cfg.data.name),
        "split": "test",
        "checkpoint": str(path),
        "model": cfg.model.name,
        "precision": precision,
        "channels_last": channels_last,
    }
    if args.draws > 1:
        out["draws"] = [r["accuracy"] for r in runs]
        out["accuracy_std"] = statistics.stdev(out["draws"])
    if note:
        print(note, file=sys.stderr)
    if args.json:
        print(json.dumps(out))
    elif args.draws > 1:
        print(
            f"accuracy {out['accuracy']:.4f} ± {out['accuracy_std']:.4f} (mean ± std of {args.draws} draws of the mask; "
            f"draw 0, the run's own: {out['draws'][0]:.4f}) on {out['dataset']} {out['split']} "
            f"({out['examples']} examples, {precision})"
        )
    else:
        print(
            f"accuracy {out['accuracy']:.4f} on {out['dataset']} {out['split']} ({out['examples']} examples, {precision})"
        )
    return 0


def _eval_precision(wanted: str, path: Path, cfg: Any, device: Any) -> tuple[str, str]:
    """The precision ``eval`` computes in, and a note when it is not the one the run was evaluated in.
    ``run``: what the run recorded (result.json or the exported checkpoint), so that ``eval`` repeats the
    run's own test accuracy; fp32 where this device has no native bf16."""
    from supermask.core import checkpoint
    from supermask.precision import device_has_native_bf16, recorded_precision, use_bf16

    if wanted != "run":
        use_bf16(wanted == "bf16", device, "--precision bf16", "--precision fp32 or run")  # a clear error
        return wanted, ""
    recorded = None
    if (path / checkpoint.CONFIG_FILE).is_file():  # verified by load_run already: its metadata alone
        meta = read_json(path / checkpoint.CONFIG_FILE)
        recorded = meta["metadata"].get("precision")
    result = _result_file(path)
    if recorded is None and result.is_file():
        try:
            recorded = recorded_precision(read_json(result), cfg.to_dict())
        except (StorageError, AttributeError):
            recorded = None
    if recorded not in ("bf16", "fp32"):  # not recorded: the run's setting as it resolves here
        recorded = "bf16" if use_bf16("auto" if cfg.train.bf16 is True else cfg.train.bf16, device) else "fp32"
    if recorded == "bf16" and not device_has_native_bf16(device):
        return "fp32", f"note: the run was evaluated in bf16, but {device} has no native bf16: evaluating in fp32"
    return recorded, ""


def _result_file(path: Path) -> Path:
    """The ``result.json`` of the run that ``path`` (a run directory or its exported checkpoint) holds."""
    from supermask.train import EXPORT, TRAIN_STATE

    return path.parent / "result.json" if path.name in (EXPORT, TRAIN_STATE) else path / "result.json"


def _eval_channels_last(path: Path, cfg: Any, device: Any) -> bool:
    """The memory layout the run was evaluated in (recorded in the exported checkpoint or result.json),
    or, where not recorded, the run's ``train.channels_last`` setting as it resolves on ``device``."""
    from supermask.core import checkpoint
    from supermask.precision import use_channels_last

    recorded = None
    if (path / checkpoint.CONFIG_FILE).is_file():  # verified by load_run already
        recorded = read_json(path / checkpoint.CONFIG_FILE)["metadata"].get("channels_last")
    result = _result_file(path)
    if not isinstance(recorded, bool) and result.is_file():
        try:
            recorded = read_json(result).get("channels_last")
        except (StorageError, AttributeError):
            recorded = None
    if isinstance(recorded, bool):
        return recorded
    return use_channels_last(cfg.train.channels_last, device)


def _cmd_export(args: argparse.Namespace) -> int:
    import os
    import shutil

    from supermask.core.checkpoint import CONFIG_FILE
    from supermask.train import EXPORT, load_run

    src = Path(args.run_dir)
    if not (src / EXPORT / CONFIG_FILE).is_file() and not (src / CONFIG_FILE).is_file():
        raise SupermaskError(f"{src} has no compact checkpoint yet: export works on a finished run directory")
    _, _, folder = load_run(
        src, args.trust_model_code, args.model
    )  # verifies the checkpoint fully (hash, checksums, masks, architecture)
    out = Path(args.out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SupermaskError(f"{out} exists and is not an empty folder; choose a new directory")
    from supermask.fileio import temp_path

    tmp = temp_path(out.absolute())  # copied whole beside it, then renamed: never a half-written export
    try:
        shutil.copytree(folder, tmp, ignore=shutil.ignore_patterns(".*"))
        if out.is_dir():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StorageError(f"cannot write {out}: {exc.strerror or exc}") from exc
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"exported {out} ({size} bytes)")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from supermask.report import plotting_available, unfinished_runs, write_report

    dirs = [Path(d) for d in args.runs_dir]
    paths = write_report(dirs, Path(args.out) if args.out else None)
    for p in paths:
        print(p)
    if not plotting_available():
        print("note: tables only: the plots need matplotlib (pip install 'supermask[train]')", file=sys.stderr)
    unfinished = unfinished_runs(dirs)
    if unfinished:
        print(
            f"note: {len(unfinished)} unfinished run(s) left out of the table (no result.json yet), "
            f"e.g. {unfinished[0]}; the note is in results.md too",
            file=sys.stderr,
        )
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, as every other error (its usage text is under --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"supermask: error: {one_line(message)} (see {self.prog} --help)\n")


def _add_trust_options(p: argparse.ArgumentParser) -> None:
    """What a user says to build a model of its own that a checkpoint names (a file never imports code)."""
    p.add_argument(
        "--trust-model-code",
        action="store_true",
        help="build a model of its own that the checkpoint names (package.module:callable): imports that module",
    )
    p.add_argument(
        "--model", default=None, metavar="NAME", help="the run's model.name, given here: the same as trusting it"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="supermask", description=__doc__)
    parser.add_argument("--version", action="version", version=f"supermask {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("train", help="train one run (no arguments: edge-popup MLP on digits)")
    p.add_argument("items", nargs="*", metavar="[CONFIG.yaml] key=value", help="e.g. supermask.k=0.3 train.epochs=5")
    p.add_argument("--print-config", action="store_true", help="print the full resolved config and exit")
    p.set_defaults(func=_cmd_train)
    p = sub.add_parser("eval", help="evaluate a run directory or an exported checkpoint")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root", default=None, help="override the run's data.root")
    p.add_argument(
        "--precision",
        choices=("run", "fp32", "bf16"),
        default="run",
        help="compute in the precision the run was evaluated in (default), or in fp32 or bf16",
    )
    p.add_argument(
        "--draws",
        type=int,
        default=1,
        metavar="N",
        help="where the eval mask is a random draw (bernoulli): the mean and std of the accuracy over draws "
        "0..N-1 (Zhou et al.: 10), from the run's last scores (train_state.pt)",
    )
    _add_trust_options(p)
    p.set_defaults(func=_cmd_eval)
    p = sub.add_parser("export", help="copy a run's compact seed + mask checkpoint to OUT_DIR")
    p.add_argument("run_dir")
    p.add_argument("out_dir")
    _add_trust_options(p)
    p.set_defaults(func=_cmd_export)
    p = sub.add_parser("sweep", help="a grid of runs: key=a,b,c varies a key (resumable, parallel, shardable)")
    p.add_argument("items", nargs="*", metavar="[CONFIG.yaml] key=a,b,c")
    p.add_argument("--out", default=None, help="folder of the run directories (default: train.out_dir)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once on this machine (each its own process)")
    p.add_argument("--shard", default=None, metavar="I/N", help="run only the I-th of N disjoint slices of the grid")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="KEY=V[,V]",
        help="run only the grid points where the axis KEY takes these values (repeatable; names unchanged)",
    )
    p.set_defaults(func=run_sweep)
    p = sub.add_parser("report", help="results table (Markdown, CSV) and accuracy-vs-k plot of runs folders")
    p.add_argument("runs_dir", nargs="+", help="one or more folders of runs (each run found once)")
    p.add_argument("--out", default=None, help="output folder (default: RUNS_DIR when there is one)")
    p.set_defaults(func=_cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except RunBusyError as exc:  # its own exit code, so that a sweep can leave the run to the other process
        print(f"supermask: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_BUSY
    except RunInterrupted as exc:  # its own exit code: a job scheduler requeues the job on it
        print(f"supermask: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_RESUMABLE
    except SupermaskError as exc:  # a user's mistake: one line; anything else is a bug and keeps its traceback
        print(f"supermask: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the system refuses (too long, no permission, a loop of links): the user's
        where = f"{shorten(str(exc.filename))}: " if exc.filename else ""
        print(f"supermask: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
