"""Helpers of the tests that train runs: a small run config, the CLI in a subprocess, a stop after the first
epoch, the metrics of a run without their timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from supermask.runconfig import load_run_config

QUIET = {"log": lambda *_: None}


def cfg_for(tmp_path: Path, *items: str) -> Any:
    """A 2-epoch run of the default (digits) in ``tmp_path/r``, with ``items`` as overrides."""
    return load_run_config(None, [f"train.out_dir={tmp_path}", "train.run_name=r", "train.epochs=2", *items])


def set_native_bf16(monkeypatch: pytest.MonkeyPatch, has: bool) -> None:
    """Make this CPU report native bf16 (``has``) or not, for the rest of the test."""
    monkeypatch.setattr("supermask.precision.cpu_has_native_bf16", lambda: has)


def stop_after_first_epoch(message: str) -> None:
    """A ``log`` that interrupts a run once its first epoch is logged (as a kill would)."""
    if message.startswith("epoch 1/"):
        raise KeyboardInterrupt


ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supermask", *args], cwd=cwd, capture_output=True, text=True, env=ENV, timeout=300
    )


def epoch_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of a run's metrics.jsonl without their timings (what two equal runs share)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
