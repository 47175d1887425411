"""Runs stopped by train.time_limit or a signal resume exactly where they stopped (issue 23, item 4)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from supermask import cli
from supermask.engine.step import StopRequest
from supermask.errors import EXIT_RESUMABLE


def _items(out: Path, method: str, name: str) -> list[str]:
    extra = ["supermask.k=0.5"] if method != "bernoulli" else []  # bernoulli: a fresh random mask each step
    return [f"supermask.method={method}", *extra, "train.epochs=3", "train.threads=1", "train.deterministic=true",
            f"train.out_dir={out}", f"train.run_name={name}"]  # fmt: skip


def _final(run: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    result = json.loads((run / "result.json").read_text())
    state = torch.load(run / "train_state.pt", weights_only=True)
    return result, state["model"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["edge-popup", "bernoulli"])
def test_a_run_stopped_mid_epoch_again_and_again_ends_bit_identical(
    method: str, tmp_path: Path, capsys, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    assert cli.main(["train", *_items(tmp_path, method, "straight")]) == 0
    # The deadline passes after 1, 4, 2, 7, 3, 5, ... steps of each process (not after a wall-clock time: on
    # a fast machine a short limit let a process run whole epochs), so that every run stops anywhere in an
    # epoch, at its end too, however fast the machine.
    after = itertools.cycle([1, 4, 2, 7, 3, 5, 11, 6])
    checks = {"left": 0}

    def past_deadline(self: StopRequest) -> bool:
        if self.deadline is None:
            return False
        if checks["left"] <= 0:
            checks["left"] = next(after)
        checks["left"] -= 1
        return checks["left"] == 0

    monkeypatch.setattr(StopRequest, "_past_deadline", past_deadline)
    stops = 0
    while True:
        code = cli.main(["train", *_items(tmp_path, method, "stopped"), "train.time_limit=3600"])
        if code == 0:
            break
        assert code == EXIT_RESUMABLE
        stops += 1
        assert stops < 200
        state = torch.load(tmp_path / "stopped" / "train_state.pt", weights_only=True)
        assert "partial" in state or state["epoch"] >= 1
    err = capsys.readouterr().err
    assert stops >= 5 and "run the same command again to resume it there" in err
    straight, straight_model = _final(tmp_path / "straight")
    stopped, stopped_model = _final(tmp_path / "stopped")
    assert stopped["accuracy"] == straight["accuracy"]
    assert straight_model.keys() == stopped_model.keys()
    assert all(torch.equal(straight_model[k], stopped_model[k]) for k in straight_model)
    rows = [json.loads(line) for line in (tmp_path / "stopped" / "metrics.jsonl").read_text().splitlines()]
    first = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in first]  # each epoch's sums carried over


@pytest.mark.slow
@pytest.mark.parametrize("name", ["SIGTERM", "SIGUSR1"])
def test_a_signal_writes_the_state_and_exits_resumable(name: str, tmp_path: Path) -> None:
    items = _items(tmp_path, "edge-popup", "signalled")
    items[items.index("train.epochs=3")] = "train.epochs=200"
    proc = subprocess.Popen([sys.executable, "-m", "supermask", "train", *items], stderr=subprocess.PIPE, text=True)
    state = tmp_path / "signalled" / "train_state.pt"
    deadline = time.monotonic() + 120
    while not state.exists() and time.monotonic() < deadline:  # after its first epoch
        time.sleep(0.1)
    time.sleep(0.3)
    os.kill(proc.pid, getattr(signal, name))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_RESUMABLE, err
    assert "resume it there" in err and "Traceback" not in err
    saved = torch.load(state, weights_only=True)
    assert "partial" in saved and saved["partial"]["step"] >= 1


def test_the_time_limit_is_wall_clock_time_from_the_start() -> None:
    assert StopRequest(None, world=1).reason(1) is None
    assert StopRequest(3600.0, world=1).reason(1) is None
    assert StopRequest(0.0, world=1).reason(1) == "train.time_limit reached"
    late = StopRequest(0.2, world=1)
    time.sleep(0.25)
    assert late.reason(7) == "train.time_limit reached"


# a process that frees and reallocates large blocks, as a training step does, counting its page faults
ALLOCATION_LOOP = """
import resource, sys
import torch
from supermask.engine import step
def faults():
    for _ in range(3):
        torch.ones(16 << 20).sum()  # 64 MB allocated, touched and freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        torch.ones(16 << 20).sum()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
default = faults()
applied = step.reuse_freed_memory()
print(default, applied, faults())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator: Linux only")
def test_reusing_freed_memory_ends_the_page_faults_of_reallocation() -> None:
    out = subprocess.run(
        [sys.executable, "-c", ALLOCATION_LOOP], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    default, applied, after = out.split()
    assert applied == "True"
    # 64 MB is 16,384 pages: by default each reallocation faults them in again; after, almost none
    assert int(default) > 10 * 16_000 * 0.9
    assert int(after) < 1_000


@pytest.mark.parametrize(("device", "reuse", "calls"), [("cpu", True, 1), ("cpu", False, 0), ("cuda", True, 0)])
def test_a_cpu_run_reuses_freed_memory_unless_told_not_to(
    device: str, reuse: bool, calls: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from supermask.engine import step
    from supermask.runconfig import RunConfig

    called: list[bool] = []
    monkeypatch.setattr(step, "reuse_freed_memory", lambda: called.append(True) or True)
    cfg = RunConfig()
    cfg.train.device, cfg.train.reuse_memory = device, reuse
    with step.execution(cfg):
        pass
    assert len(called) == calls
