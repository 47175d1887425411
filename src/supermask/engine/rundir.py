"""The run directory: its files, its one writer, and what it holds against a config (fresh, resume or
finished). Nothing here trains; :mod:`supermask.train` and :mod:`supermask.multitask` use it alike."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from supermask.errors import RunBusyError, StorageError, SupermaskConfigError, TrainingError
from supermask.fileio import make_dirs, read_json
from supermask.runconfig import RunConfig, experiment_key, read_yaml_file

TASKS_STATE = "tasks_state.pt"

TRAIN_STATE = "train_state.pt"


METRICS = "metrics.jsonl"


RESULT = "result.json"


CONFIG = "config.yaml"


EXPORT = "supermask"


class RunLock:
    """One writer per run directory: an exclusive ``flock`` on ``<run dir>/.lock``, held for the whole
    run and released by the kernel when the process ends (a killed run leaves no stale lock)."""

    FILE = ".lock"

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / self.FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        import fcntl

        make_dirs(self.path.parent)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise StorageError(f"cannot create the lock file {self.path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunBusyError(
                f"{self.path.parent} is in use by another supermask process (pid {holder}); wait for it to "
                "finish, or choose another train.run_name or train.out_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


RUN_FILES = (TRAIN_STATE, METRICS, RESULT, CONFIG, TASKS_STATE)
#: what the trackers write in a run directory (replaced with the run by train.overwrite=true)
TRACKER_OUTPUTS = ("steps.csv", "epochs.csv", "tensorboard", "mlruns", "wandb")


def differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``section.key: saved -> wanted`` for each experiment key that differs."""
    out = []
    a, b = experiment_key(saved), experiment_key(wanted)
    for section in sorted(set(a) | set(b)):
        x, y = a.get(section, {}), b.get(section, {})
        for key in sorted(set(x) | set(y), key=str):
            if x.get(key) != y.get(key):
                out.append(f"{section}.{key}: {x.get(key)!r} -> {y.get(key)!r}")
    return out


def prepare_run_dir(cfg: RunConfig, run_dir: Path, world: int, writer: bool = True) -> dict[str, Any] | None:
    """Check what ``run_dir`` already holds against ``cfg`` (under the run's lock); return the training
    state to resume from, or None to start afresh. Never silently replaces or mixes runs. Only the
    ``writer`` (rank 0, holding the lock) removes a run that ``train.overwrite=true`` replaces."""
    present = [f for f in RUN_FILES if (run_dir / f).is_file()]
    if not present:
        return None
    if not cfg.train.resume:
        if not cfg.train.overwrite:
            what = "a finished run" if (run_dir / RESULT).is_file() else "a run"
            raise TrainingError(
                f"{run_dir} holds {what} and train.resume=false: set train.resume=true to continue it, "
                "train.overwrite=true to replace it, or choose another train.run_name"
            )
        if writer:
            for f in RUN_FILES:
                (run_dir / f).unlink(missing_ok=True)
            shutil.rmtree(run_dir / EXPORT, ignore_errors=True)
            for name in TRACKER_OUTPUTS:
                path = run_dir / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        return None
    state = None
    if (run_dir / TRAIN_STATE).is_file():
        try:
            state = torch.load(run_dir / TRAIN_STATE, map_location="cpu", weights_only=True)
            saved = state["config"]
        except Exception as exc:  # a foreign or damaged file: never train over it silently
            raise TrainingError(
                f"{run_dir / TRAIN_STATE} cannot be read ({exc}); set train.overwrite=true with "
                "train.resume=false to start this run again"
            ) from exc
    else:
        try:
            saved = read_yaml_file(run_dir / CONFIG) if (run_dir / CONFIG).is_file() else None
        except SupermaskConfigError as exc:
            raise TrainingError(f"{run_dir / CONFIG} cannot be read: {exc}") from exc
    if isinstance(saved, dict):
        diff = differences(saved, cfg.to_dict())
    else:
        diff = ["(no readable config)"]
    if diff:
        raise TrainingError(
            f"{run_dir} holds a run with a different config ({'; '.join(diff[:5])}); use another "
            "train.run_name or train.out_dir, or replace it with train.resume=false train.overwrite=true"
        )
    if state is not None:
        saved_world = int(state.get("world_size", 1))
        if saved_world != world and not cfg.train.allow_world_size_change:
            batch = cfg.data.batch_size
            raise TrainingError(
                f"{run_dir} was trained with {saved_world} process(es) (global batch {saved_world * batch}); "
                f"resuming with {world} (global batch {world * batch}) would change the experiment. To continue "
                "with this world size on purpose, add train.allow_world_size_change=true (each epoch's world size "
                "is recorded in result.json)"
            )
        if cfg.train.deterministic and state.get("threads") not in (None, torch.get_num_threads()):
            raise TrainingError(
                f"{run_dir} ran deterministically with {state['threads']} threads, this process has "
                f"{torch.get_num_threads()}: set train.threads={state['threads']} to resume bit-identically"
            )
    return state


def finished_result(run_dir: Path, state: dict[str, Any] | None, epochs: int) -> dict[str, Any] | None:
    """The stored result of a run that trained all its epochs and was exported, else None."""
    if state is None or state.get("epoch", 0) < epochs or not (run_dir / RESULT).is_file():
        return None
    try:
        result = read_json(run_dir / RESULT)
    except StorageError:
        return None  # re-evaluated and written again
    return result if isinstance(result, dict) else None


def result_without_state(run_dir: Path, state_file: str) -> dict[str, Any] | None:
    """What a run directory (its config already checked against this run's) holds when its training
    state ``state_file`` is missing, as for a run copied from another machine or a committed summary: its
    finished result, kept as it is (returned); recorded epochs without a state, which cannot be continued
    and are never trained over (an error); or nothing recorded yet (None: the run starts)."""
    if (run_dir / state_file).is_file():
        return None
    if (run_dir / RESULT).is_file():
        try:
            result = read_json(run_dir / RESULT)
        except StorageError as exc:
            raise TrainingError(
                f"{exc}, and {run_dir} has no {state_file} to redo it from: "
                "keep it and use another train.run_name, or start it again with train.resume=false train.overwrite=true"
            ) from exc
        if isinstance(result, dict):
            return result
    epochs = 0
    if (run_dir / METRICS).is_file():
        try:
            epochs = sum(
                1 for line in (run_dir / METRICS).read_bytes().split(b"\n")[:-1] if line.strip()
            )  # whole lines
        except OSError as exc:
            raise StorageError(f"cannot read {run_dir / METRICS}: {exc.strerror or exc}") from exc
    if epochs:
        raise TrainingError(
            f"{run_dir} holds {epochs} recorded epoch(s) but no {state_file} (a run's training state stays on "
            "the machine that trained it), so it cannot be continued here and is not trained over: keep it and "
            "use another train.run_name or train.out_dir, or start it again with train.resume=false "
            "train.overwrite=true"
        )
    return None


def append_line(path: Path, row: dict[str, Any]) -> None:
    """Append ``row`` as one JSON line, whole or not at all (see :func:`append_text`)."""
    append_text(path, json.dumps(row) + "\n")


def append_text(path: Path, text: str) -> None:
    """Append ``text`` whole or not at all: one ``write`` on an append-only descriptor, and a short or
    failed write (a full disk) is cut back off, so no reader ever meets half a line; the failure is a
    :class:`StorageError` naming the file."""
    data = text.encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"wrote {written} of {len(data)} bytes")
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)  # the line is not there, rather than half of it
            raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
