"""The training engine and the CLI: default run, resume after a kill, DDP, sweep, report, NaN."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from supermask.errors import TrainingError
from supermask.runconfig import load_run_config
from supermask.train import train
from tests.helpers.runs import ENV, QUIET, cfg_for, epoch_metrics, run_cli, stop_after_first_epoch


def _kill_processes_in(folder: Path) -> None:
    """SIGKILL every process of this user whose working directory is ``folder`` (Linux /proc)."""
    for proc_dir in Path("/proc").iterdir():
        if proc_dir.name.isdigit():
            try:
                if Path(os.readlink(proc_dir / "cwd")) == folder.resolve():
                    os.kill(int(proc_dir.name), signal.SIGKILL)
            except OSError:  # gone already, or not ours to read
                pass


@pytest.mark.parametrize("method", ["dense", "edge-popup"])
def test_deterministic_runs_are_bit_identical(tmp_path: Path, method: str) -> None:
    common = ["train.epochs=3", "train.deterministic=true", f"supermask.method={method}"]
    for name in ("a", "b"):
        train(load_run_config(None, [f"train.out_dir={tmp_path}", f"train.run_name={name}", *common]), **QUIET)
    assert epoch_metrics(tmp_path / "a") == epoch_metrics(tmp_path / "b")
    state_a = torch.load(tmp_path / "a" / "train_state.pt", weights_only=True)["model"]
    state_b = torch.load(tmp_path / "b" / "train_state.pt", weights_only=True)["model"]
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def test_deterministic_fixes_and_records_threads_and_restores_the_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []
    real = torch.optim.SGD.step

    def spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append((torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    before = torch.get_num_threads()
    with pytest.raises(KeyboardInterrupt):
        train(cfg_for(tmp_path, "train.deterministic=true", "train.threads=1"), log=stop_after_first_epoch)
    assert set(seen) == {(True, 1)}
    assert torch.get_num_threads() == before and not torch.are_deterministic_algorithms_enabled()
    with pytest.raises(TrainingError, match="ran deterministically with 1 threads.*set train.threads=1"):
        train(cfg_for(tmp_path, "train.deterministic=true", "train.threads=2"), **QUIET)
    assert train(cfg_for(tmp_path, "train.deterministic=true", "train.threads=1"), **QUIET)["deterministic"]


@pytest.mark.slow
def test_default_run_reaches_90_percent_and_cli_round_trip(tmp_path: Path) -> None:
    done = run_cli("train", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-2].startswith("test accuracy: ") and lines[-1].startswith("run directory: ")
    run_dir = tmp_path / lines[-1].split(": ", 1)[1]
    assert float(lines[-2].split()[2]) >= 0.90
    ev = run_cli("eval", str(run_dir), "--json", cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr
    result = json.loads(ev.stdout)
    assert 0.9 <= result["accuracy"] <= 1.0 and result["dataset"] == "digits" and result["split"] == "test"
    ex = run_cli("export", str(run_dir), str(tmp_path / "exported"), cwd=tmp_path)
    assert ex.returncode == 0, ex.stderr
    names = {p.name for p in (tmp_path / "exported").iterdir()}
    assert len(names) == 2 and "supermask.json" in names and any(n.endswith(".safetensors") for n in names)
    again = json.loads(run_cli("eval", str(tmp_path / "exported"), "--json", cwd=tmp_path).stdout)
    assert again["accuracy"] == result["accuracy"]
    assert (run_dir / "config.yaml").is_file() and len((run_dir / "metrics.jsonl").read_text().splitlines()) == 20


@pytest.mark.slow
def test_killed_run_resumes_to_identical_metrics(tmp_path: Path) -> None:
    args = ["train", "train.epochs=40", "supermask.method=bernoulli", "optim.lr=20", "train.out_dir=runs"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "supermask", *args, "train.run_name=killed"],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics = tmp_path / "runs" / "killed" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.is_file() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = len(metrics.read_text().splitlines())
    assert 3 <= killed_at < 40, "the run was not killed mid-way"
    resumed = run_cli(*args, "train.run_name=killed", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    straight = run_cli(*args, "train.run_name=straight", cwd=tmp_path)
    assert straight.returncode == 0
    assert epoch_metrics(tmp_path / "runs" / "killed") == epoch_metrics(tmp_path / "runs" / "straight")


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path: Path) -> None:
    common = ["train.epochs=5", "train.out_dir=runs", "train.progress=none"]
    one = run_cli("train", *common, "data.batch_size=64", "train.run_name=one", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--standalone",  # a free port: a fixed one can collide with a lingering socket
           "-m", "supermask", "train", *common, "data.batch_size=32", "train.run_name=two"]  # fmt: skip
    # its own process group; torchrun starts each rank in a session of its own, so on a time-out the ranks
    # are found by their working directory and killed too: none is left waiting in a collective, holding
    # the pipes open (the test then fails at once instead of hanging until pytest's time-out)
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=os.setpgrp)  # fmt: skip
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _kill_processes_in(tmp_path)
        proc.communicate(timeout=30)
        raise
    assert proc.returncode == 0, err[-3000:]
    r1 = json.loads((tmp_path / "runs" / "one" / "result.json").read_text())
    r2 = json.loads((tmp_path / "runs" / "two" / "result.json").read_text())
    assert r2["world_size"] == 2
    assert r2["hardware"].startswith("2 x ") and r1["hardware"] and not r1["hardware"].startswith("2 x ")
    # Same global batch of 64 per step (rank r takes perm[r::2]); only the float summation order and the
    # one example the ranks' equal split drops differ. Stated tolerance: 2 percentage points.
    assert abs(r1["accuracy"] - r2["accuracy"]) <= 0.02, (r1["accuracy"], r2["accuracy"])


@pytest.mark.slow
def test_compile_matches_eager(tmp_path: Path) -> None:
    """torch.compile must not freeze a stale mask into the graph (the selection stays eager)."""
    common = [f"train.out_dir={tmp_path}", "train.epochs=2"]
    eager = train(load_run_config(None, [*common, "train.run_name=eager"]), log=lambda *_: None)
    compiled = train(
        load_run_config(None, [*common, "train.run_name=compiled", "train.compile=true"]), log=lambda *_: None
    )
    assert abs(eager["accuracy"] - compiled["accuracy"]) <= 0.01


@pytest.mark.slow
@pytest.mark.parametrize("method", ["edge-popup", "bernoulli"])
def test_compiled_model_is_one_graph_and_steps_like_eager(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torch.compile the traced selection (the accelerator path, forced here on the CPU) leaves no
    graph break per layer and is recomputed on every step."""

    import torch.nn.functional as F

    import supermask
    from supermask.core.layers import SupermaskLayer
    from supermask.models import create

    monkeypatch.setattr(
        SupermaskLayer, "traces_selection", lambda self: self.method.name == "edge-popup" or self.training
    )

    torch.manual_seed(0)
    eager = supermask.to_supermask(create("conv2", width=0.125), supermask.SupermaskConfig(k=0.3, method=method))
    compiled_model = copy.deepcopy(eager)
    for _, layer in supermask.supermask_layers(eager):
        layer._mask_at_start = layer.mask().clone()
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    explained = torch._dynamo.explain(compiled_model)(x)
    assert explained.graph_break_count == 0, [r.reason for r in explained.break_reasons]
    net = torch.compile(compiled_model, fullgraph=True)
    if method == "bernoulli":  # compiled code draws with its own generator: a fresh mask on every call
        assert not torch.equal(net(x), net(x))
        return
    opts = [torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1.0) for m in (eager, compiled_model)]
    for _ in range(3):
        outs = []
        for fn, opt in ((eager, opts[0]), (net, opts[1])):
            out = fn(x)
            F.cross_entropy(out, y).backward()
            opt.step()
            opt.zero_grad()
            outs.append(out.detach())
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-4)
    # lr 1 moved the scores: both selected the same new masks
    changed = False
    for (_, a), (_, b) in zip(supermask.supermask_layers(eager), supermask.supermask_layers(compiled_model)):
        assert torch.equal(a.mask(), b.mask())
        changed |= not torch.equal(a.mask(), a._mask_at_start)
    assert changed
