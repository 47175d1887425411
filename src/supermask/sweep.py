"""Sweeps: a grid of runs from ``key=a,b,c`` items, resumable, sharded and parallel (``supermask sweep``).

Grid points of one experiment run once; finished runs are skipped; ``--jobs`` runs several at a time in
processes of their own; a run in use by another process is left to it; a stop request ends the sweep
resumably."""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def split_config(items: list[str]) -> tuple[str | None, list[str]]:
    """(a leading CONFIG.yaml, the key=value items)."""
    if items and "=" not in items[0]:
        return items[0], items[1:]
    return None, items


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


def grid_values(raw: str) -> list[str]:
    """The values of one sweep item, split at the commas outside brackets and braces: ``0.3,0.5`` is two
    values, ``{threshold: 0.2, score_scale: xavier}`` one mapping, ``[0, 2],[1]`` two lists."""
    values: list[str] = []
    depth = start = 0
    for i, char in enumerate(raw):
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(raw[start:i].strip())
            start = i + 1
    return [*values, raw[start:].strip()]


def _parse_only(texts: list[str], axes: list[tuple[str, list[str]]]) -> dict[str, set[str]]:
    """``--only KEY=V[,V...]`` (repeatable): the values of a grid axis to keep, checked against the axes."""
    from supermask.runconfig import parse_override

    varied = dict(axes)
    keep: dict[str, set[str]] = {}
    for text in texts:
        key, _, raw = text.partition("=")
        key = key.strip()
        values = [v for v in grid_values(raw) if v]
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
    from supermask.runconfig import experiment_key, load_run_config, safe_name

    axes: list[tuple[str, list[str]]] = []
    fixed: list[str] = []
    for item in items:
        key, _, raw = item.partition("=")
        key = key.strip()
        values = grid_values(raw)
        if len(values) > 1:
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
        name = safe_name(f"{cfg.model.name}-{cfg.supermask.method}" + (f"_{short}" if short else ""))
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


def run_sweep(args: argparse.Namespace) -> int:
    """``supermask sweep``: resolve the grid, skip finished runs, run the rest (here or in a pool), record the sweep."""

    if args.jobs < 1:
        raise SupermaskConfigError(f"--jobs {args.jobs} must be at least 1")
    shard, shards = _parse_shard(args.shard)
    config, items = split_config(args.items)
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
    _record_sweep(out_dir, config, items, args.only)
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


def _record_sweep(out_dir: Path, config: str | None, items: list[str], only: list[str] | None) -> None:
    """``sweep.yaml``: the command that made the folder's runs. Parts of one sweep run side by side
    (``--only``, ``--shard``) add to one record instead of the last part replacing the others': the same
    grid's record keeps the union of its parts' ``--only`` (none once any part ran the whole grid). Parts
    finishing at once take turns (an exclusive ``flock`` on the folder's ``.lock``), so none is lost."""
    import fcntl
    import os

    from supermask.fileio import atomic_write, make_dirs
    from supermask.runconfig import read_yaml_file

    path = make_dirs(out_dir) / "sweep.yaml"
    record: dict[str, Any] = {"config": config, "items": items, **({"only": list(only)} if only else {})}
    try:
        lock = os.open(out_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise StorageError(f"cannot create the lock file {out_dir / '.lock'}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # held for the read and the write; closing the file drops it
        try:
            earlier = read_yaml_file(path) if path.is_file() else None
        except SupermaskConfigError:
            earlier = None  # a damaged record is replaced by this sweep's
        if isinstance(earlier, dict) and earlier.get("config") == config and earlier.get("items") == items:
            before = earlier.get("only")
            if not only or not isinstance(before, list):
                record.pop("only", None)
            else:
                record["only"] = [*before, *(o for o in only if o not in before)]
        atomic_write(path, _yaml_dump(record))
    finally:
        os.close(lock)


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


#: the longest error line printed (an argument of megabytes is never echoed whole)
MAX_MESSAGE = 1000


def one_line(message: str) -> str:
    """The message on one line (a multi-line message would read as a traceback), at most
    :data:`MAX_MESSAGE` characters. An error re-raised from a DataLoader worker carries the worker's
    traceback: its own message is the last line."""
    if "Original Traceback" in message:
        last = [line for line in message.strip().splitlines() if line.strip()][-1]
        message = last.split(": ", 1)[1] if ": " in last else last
    return shorten(" ".join(message.split()), MAX_MESSAGE)
