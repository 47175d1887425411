"""The ``supermask`` command line: train, eval, export, sweep, report."""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from dataclasses import dataclass
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


def _cmd_train(args: argparse.Namespace) -> int:
    from supermask.runconfig import load_run_config, to_yaml
    from supermask.train import train

    config, overrides = _split_config(args.items)
    cfg = load_run_config(config, overrides)
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    result = train(cfg)
    if result.get("run_dir") and int(__import__("os").environ.get("RANK", "0")) == 0:
        steps = result.get("steps_per_epoch")
        of = (
            f" of {steps} steps (train.max_steps)" if result.get("config", {}).get("train", {}).get("max_steps") else ""
        )
        print(f"test accuracy: {result['accuracy']:.4f} ({result['dataset']}, {result['epochs']} epochs{of})")
        print(f"run directory: {result['run_dir']}")
    return 0


def _split_config(items: list[str]) -> tuple[str | None, list[str]]:
    if items and "=" not in items[0]:
        return items[0], items[1:]
    return None, items


def _cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from supermask.data import DATASETS, describe
    from supermask.precision import configured_device
    from supermask.runconfig import check_device
    from supermask.train import build_data, evaluate, load_run, root_ignored

    model, cfg, path = load_run(args.path, args.trust_model_code, args.model)
    if cfg.data.split_tasks > 1:
        raise SupermaskError(
            f"{path} is a run over {cfg.data.split_tasks} tasks: its result.json holds the accuracy of each task and "
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
    metrics = evaluate(model, test_loader, device, precision == "bf16")
    out = {
        "accuracy": metrics["accuracy"],
        "loss": metrics["loss"],
        "examples": metrics["examples"],
        "dataset": describe(cfg.data.name),
        "split": "test",
        "checkpoint": str(path),
        "model": cfg.model.name,
        "precision": precision,
        "channels_last": channels_last,
    }
    if note:
        print(note, file=sys.stderr)
    if args.json:
        print(json.dumps(out))
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
    from supermask.train import EXPORT

    return path.parent / "result.json" if path.name == EXPORT else path / "result.json"


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


EXIT_BUSY = 75  # a run directory is in use by another process (sysexits' EX_TEMPFAIL)


@dataclass
class _SweepRun:
    name: str
    overrides: list[str]
    cfg: Any


def _parse_shard(text: str | None) -> tuple[int, int]:
    if text is None:
        return 1, 1
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise SupermaskConfigError(f"--shard {text!r} must be I/N with 1 <= I <= N (e.g. --shard 2/8)")
    return int(match.group(1)), int(match.group(2))


def _parse_only(texts: list[str], axes: list[tuple[str, list[str]]]) -> dict[str, set[str]]:
    """``--only KEY=V[,V...]`` (repeatable): the values of a grid axis to keep, checked against the axes."""
    from supermask.runconfig import parse_override

    varied = dict(axes)
    keep: dict[str, set[str]] = {}
    for text in texts:
        key, _, raw = text.partition("=")
        key = key.strip()
        values = [v.strip() for v in raw.split(",") if v.strip()]
        if "=" not in text or not values:
            raise SupermaskConfigError(f"--only {text!r} must be KEY=VALUE[,VALUE...] (e.g. --only train.seed=2)")
        if key not in varied:
            names = ", ".join(varied) or "none"
            raise SupermaskConfigError(f"--only {text}: {key} is not varied in this sweep (its axes: {names})")
        # compared as parsed values (0.3 is 0.30), kept as the axis spells them
        spelled = {json.dumps(parse_override(f"{key}={v}")[1], default=str): v for v in varied[key]}
        parsed = [json.dumps(parse_override(f"{key}={v}")[1], default=str) for v in values]
        unknown = [v for v, p in zip(values, parsed) if p not in spelled]
        if unknown:
            raise SupermaskConfigError(
                f"--only {text}: {', '.join(unknown)} is not among {key}'s values ({', '.join(varied[key])})"
            )
        keep[key] = keep.get(key, set()) | {spelled[p] for p in parsed}
    return keep


def _sweep_runs(
    config: str | None, items: list[str], out_dir: Path | None, only: list[str] | None = None
) -> tuple[list[_SweepRun], Path]:
    """Every grid point's checked config, grid points of the same experiment (and seed) merged into one.
    ``only`` keeps the grid points whose axes take the given values; run names stay the whole grid's."""
    from supermask.precision import run_precision
    from supermask.runconfig import experiment_key, load_run_config, parse_override, safe_name

    axes: list[tuple[str, list[str]]] = []
    fixed: list[str] = []
    for item in items:
        key, _ = parse_override(item)
        raw = item.partition("=")[2]
        if "," in raw and not raw.strip().startswith("["):
            values = [v.strip() for v in raw.split(",")]
            if "" in values:
                raise SupermaskConfigError(f"{item!r} has an empty value: write the values as {key}=a,b,c")
            axes.append((key, values))
        else:
            fixed.append(item)
    keep = _parse_only(only or [], axes)
    runs: list[_SweepRun] = []
    out: Path | None = out_dir
    first_of: dict[str, str] = {}
    for point in itertools.product(*[[(k, v) for v in values] for k, values in axes]):
        if any(k in keep and v not in keep[k] for k, v in point):
            continue  # left out by --only, before its config is resolved (it may not resolve here)
        combo = tuple(f"{k}={v}" for k, v in point)
        # the fixed items are resolved with each point's axes (an option of the one method that --only keeps)
        cfg = load_run_config(config, [*fixed, *combo])
        if out is None:
            out = Path(cfg.train.out_dir)
        short = "_".join(c.split(".", 1)[1] for c in combo)
        name = safe_name(f"{cfg.model.name}-{cfg.supermask_config().method}" + (f"_{short}" if short else ""))
        overrides = [*fixed, *combo, f"train.out_dir={out}", f"train.run_name={name}"]
        cfg = load_run_config(config, overrides)
        precision = run_precision(cfg)
        identity = json.dumps([experiment_key(cfg.to_dict()), cfg.train.seed, precision], sort_keys=True, default=str)
        if identity in first_of:
            print(f"{name}: the same experiment as {first_of[identity]}; run once")
            continue
        if name in first_of.values():  # two experiments, one folder: values differing only in unsafe characters
            raise SupermaskConfigError(
                f"two grid points get the run name {name!r} ({', '.join(combo)} and another): their values "
                "differ only in characters a folder name cannot hold; spell them apart"
            )
        first_of[identity] = name
        runs.append(_SweepRun(name, overrides, cfg))
    assert out is not None  # every axis keeps at least one value, so the grid has a point
    return runs, out


def _finished(run: _SweepRun) -> bool:
    """Whether the run's directory holds its finished result; a different experiment there is an error."""
    from supermask.runconfig import experiment_key
    from supermask.train import RESULT

    path = run.cfg.run_dir() / RESULT
    if not path.is_file():
        return False
    try:
        saved = read_json(path).get("config")
    except (StorageError, AttributeError):
        saved = None
    if not isinstance(saved, dict) or experiment_key(saved) != experiment_key(run.cfg.to_dict()):
        raise SupermaskError(
            f"{run.cfg.run_dir()} holds a finished run of a different (or unrecorded) config; "
            "use another --out or move that directory away"
        )
    return True


def _cmd_sweep(args: argparse.Namespace) -> int:
    from supermask.fileio import atomic_write, make_dirs

    if args.jobs < 1:
        raise SupermaskConfigError(f"--jobs {args.jobs} must be at least 1")
    shard, shards = _parse_shard(args.shard)
    config, items = _split_config(args.items)
    runs, out_dir = _sweep_runs(config, items, Path(args.out) if args.out else None, args.only)
    mine = runs[shard - 1 :: shards]
    todo = []
    for i, run in enumerate(mine, 1):  # every finished run is checked before any starts
        if _finished(run):
            print(f"[{i}/{len(mine)}] {run.name}: finished, skipped")
        else:
            todo.append(run)
    done_before = len(mine) - len(todo)
    if shards > 1:
        print(f"shard {shard}/{shards}: {len(mine)} of the sweep's {len(runs)} runs")
    if args.jobs == 1:
        outcome = []
        for i, r in enumerate(todo, 1):  # a stop request ends the sweep: the runs after it wait for the rerun
            outcome.append(_run_in_process(r, i, len(todo)) if "interrupted" not in outcome else "pending")
    else:
        outcome = _run_pool(todo, args.jobs, config)
    busy = [r.name for r, status in zip(todo, outcome) if status == "busy"]
    failed = [r.name for r, status in zip(todo, outcome) if status == "failed"]
    record: dict[str, Any] = {"config": config, "items": items, **({"only": args.only} if args.only else {})}
    atomic_write(make_dirs(out_dir) / "sweep.yaml", _yaml_dump(record))
    print(
        f"sweep of {len(mine)} runs in {out_dir}: {outcome.count('done')} trained now, {done_before} were already "
        f"finished, {len(busy)} in use by other processes, {len(failed)} failed"
        + (f", {outcome.count('interrupted')} stopped on request" if "interrupted" in outcome else "")
    )
    if failed:
        raise SupermaskError(
            f"{len(failed)} run(s) failed: {', '.join(failed)} (their errors are above or in train.log)"
        )
    if "interrupted" in outcome:
        print(f"sweep stopped on request: run the same command again to resume it (exit {EXIT_RESUMABLE})")
        return EXIT_RESUMABLE
    return 0


def _yaml_dump(data: Any) -> str:
    import yaml

    return str(yaml.safe_dump(data))


def _run_in_process(run: _SweepRun, i: int, n: int) -> str:
    from supermask.train import train

    print(f"[{i}/{n}] {run.name}")
    try:
        result = train(run.cfg)
    except RunBusyError:
        print(f"[{i}/{n}] {run.name}: in use by another process, left to it")
        return "busy"
    except RunInterrupted as exc:
        print(f"[{i}/{n}] {run.name}: {one_line(str(exc))}", file=sys.stderr)
        return "interrupted"
    except SupermaskError as exc:
        print(f"[{i}/{n}] {run.name}: failed: {one_line(str(exc))}", file=sys.stderr)
        return "failed"
    print(f"[{i}/{n}] {run.name}: test accuracy {result['accuracy']:.4f}")
    return "done"


def _run_pool(runs: list[_SweepRun], jobs: int, config: str | None) -> list[str]:
    """Run ``jobs`` runs at a time, each in its own ``supermask train`` process with an equal share of
    the CPU threads; output goes to ``<run dir>/train.log``."""
    import os
    import subprocess
    import time

    threads = max(1, (os.cpu_count() or 1) // jobs)
    status = ["pending"] * len(runs)
    active: dict[int, Any] = {}
    queue = list(range(len(runs)))
    while queue or active:
        while queue and len(active) < jobs:
            i = queue.pop(0)
            run = runs[i]
            extra = [] if run.cfg.train.threads is not None else [f"train.threads={threads}"]
            cmd = [sys.executable, "-m", "supermask", "train", *([config] if config else []), *run.overrides, *extra]
            run_dir = run.cfg.run_dir()
            run_dir.mkdir(parents=True, exist_ok=True)
            log = open(run_dir / "train.log", "ab")  # noqa: SIM115 - closed when the process ends
            active[i] = (subprocess.Popen(cmd + ["train.progress=lines"], stdout=log, stderr=subprocess.STDOUT), log)
            print(f"[{i + 1}/{len(runs)}] {run.name}: started")
        time.sleep(0.2)
        for i, (proc, log) in list(active.items()):
            code = proc.poll()
            if code is None:
                continue
            log.close()
            del active[i]
            status[i] = {0: "done", EXIT_BUSY: "busy", EXIT_RESUMABLE: "interrupted"}.get(code, "failed")
            if status[i] == "interrupted":  # a stop request: no new run starts, the others stop on theirs
                queue.clear()
            print(f"[{i + 1}/{len(runs)}] {runs[i].name}: {status[i]}" + (f" (exit {code})" if code else ""))
    return status


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
    p.set_defaults(func=_cmd_sweep)
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


def one_line(message: str) -> str:
    """The message on one line (a multi-line message would read as a traceback). An error re-raised from
    a DataLoader worker carries the worker's traceback: its own message is the last line."""
    if "Original Traceback" in message:
        last = [line for line in message.strip().splitlines() if line.strip()][-1]
        message = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(message.split())


if __name__ == "__main__":
    sys.exit(main())
