"""The training engine and the CLI: default run, resume after a kill, DDP, sweep, report, NaN."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from supermask import cli
from supermask.errors import SupermaskError
from supermask.runconfig import load_run_config
from supermask.train import TrainingError, train

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supermask", *args], cwd=cwd, capture_output=True, text=True, env=ENV, timeout=300
    )


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


def test_cli_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["train", "optim.lrr=1"]) == 2
    assert "unknown key 'optim.lrr'; did you mean 'optim.lr'? valid:" in capsys.readouterr().err
    assert cli.main(["train", "supermask.method=popup"]) == 2
    assert "choose one of: edge-popup" in capsys.readouterr().err
    assert cli.main(["train", "data.name=svhn"]) == 2
    assert "choose one of: digits" in capsys.readouterr().err
    assert cli.main(["train", "train.epochs=two"]) == 2
    assert "must be an integer" in capsys.readouterr().err
    assert cli.main(["eval", str(tmp_path)]) == 2
    assert "neither a run directory" in capsys.readouterr().err


def _metrics(run_dir: Path) -> list[dict[str, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("seconds")
    return rows


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
    assert _metrics(tmp_path / "runs" / "killed") == _metrics(tmp_path / "runs" / "straight")


def test_resume_refuses_a_different_config(tmp_path: Path) -> None:
    cfg = load_run_config(None, [f"train.out_dir={tmp_path}", "train.epochs=1", "train.run_name=r"])
    train(cfg, log=lambda *_: None)
    cfg2 = load_run_config(None, [f"train.out_dir={tmp_path}", "train.epochs=2", "train.run_name=r"])
    with pytest.raises(TrainingError, match="different config"):
        train(cfg2, log=lambda *_: None)


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import supermask.engine.epoch as engine  # the one epoch loop

    real = engine.F.cross_entropy
    calls = {"n": 0}

    def poisoned(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        out = real(*args, **kwargs)
        return out * float("nan") if calls["n"] > 2 * 23 + 5 else out  # NaN in epoch 3

    monkeypatch.setattr(engine.F, "cross_entropy", poisoned)
    cfg = load_run_config(None, [f"train.out_dir={tmp_path}", "train.epochs=5", "train.run_name=r"])
    with pytest.raises(TrainingError, match=r"became nan in epoch 3.*after epoch 2"):
        train(cfg, log=lambda *_: None)
    state = torch.load(tmp_path / "r" / "train_state.pt", weights_only=True)
    assert state["epoch"] == 2
    # the unfinished run can still be evaluated from its last good checkpoint
    assert cli.main(["eval", str(tmp_path / "r"), "--json"]) == 0


def _kill_processes_in(folder: Path) -> None:
    """SIGKILL every process of this user whose working directory is ``folder`` (Linux /proc)."""
    for proc_dir in Path("/proc").iterdir():
        if proc_dir.name.isdigit():
            try:
                if Path(os.readlink(proc_dir / "cwd")) == folder.resolve():
                    os.kill(int(proc_dir.name), signal.SIGKILL)
            except OSError:  # gone already, or not ours to read
                pass


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


def test_sweep_resumes_and_report_writes_png(tmp_path: Path) -> None:
    args = ["sweep", "train.epochs=3", "supermask.k=0.3,0.7", "train.seed=0,1", "--out", "grid"]
    first = run_cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    runs = sorted(p for p in (tmp_path / "grid").iterdir() if p.is_dir())
    assert len(runs) == 4
    (runs[0] / "result.json").unlink()  # as if interrupted after its last checkpoint
    second = run_cli(*args, cwd=tmp_path)
    assert second.stdout.count("finished, skipped") == 3
    assert "resuming" in second.stdout
    assert (runs[0] / "result.json").is_file()
    changed = run_cli("sweep", "train.epochs=4", "supermask.k=0.3,0.7", "train.seed=0,1", "--out", "grid", cwd=tmp_path)
    assert changed.returncode == 2 and "holds a finished run of a different" in changed.stderr
    rep = run_cli("report", "grid", cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    png = (tmp_path / "grid" / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    table = (tmp_path / "grid" / "results.md").read_text()
    assert (
        table.count("| digits | mlp |") == 2 and table.count(" | 2 | ") == 2 and table.count(" ± ") == 3
    )  # two rows and the note
    assert (tmp_path / "grid" / "results.csv").read_text().startswith("dataset,model,width,method")
    assert len((tmp_path / "grid" / "runs.csv").read_text().splitlines()) == 1 + 4
    assert not (tmp_path / "grid" / "curves.png").exists()  # 3 epochs: too short for learning curves


def test_report_plots_learning_curves(tmp_path: Path) -> None:
    from supermask.report import write_report

    for name, epochs in (("long", 6), ("short", 2)):
        d = tmp_path / name
        d.mkdir()
        r = dict(dataset="d", model="m", width=1.0, method="edge-popup", weight_init="signed_constant", k=0.5,
                 seed=0, epochs=epochs, kept_fraction=0.5, accuracy=0.5, device="cpu")  # fmt: skip
        (d / "result.json").write_text(json.dumps(r))
        rows = [{"epoch": e, "test_accuracy": 0.1 * e, "train_accuracy": 0.1 * e} for e in range(1, epochs + 1)]
        (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    paths = write_report(tmp_path)
    assert tmp_path / "curves.png" in paths
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from supermask.report import learning_curves

    assert list(learning_curves(tmp_path)) == ["long"]  # "short" has fewer than 5 epochs
    with open(tmp_path / "long" / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 7, "test_acc\n')  # a line cut short
    with pytest.raises(SupermaskError, match=r"metrics.jsonl line 7 cannot be read"):
        write_report(tmp_path)


def test_compile_matches_eager(tmp_path: Path) -> None:
    """torch.compile must not freeze a stale mask into the graph (the selection stays eager)."""
    common = [f"train.out_dir={tmp_path}", "train.epochs=2"]
    eager = train(load_run_config(None, [*common, "train.run_name=eager"]), log=lambda *_: None)
    compiled = train(
        load_run_config(None, [*common, "train.run_name=compiled", "train.compile=true"]), log=lambda *_: None
    )
    assert abs(eager["accuracy"] - compiled["accuracy"]) <= 0.01


def test_nan_in_first_epoch_says_no_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import supermask.engine.epoch as engine  # the one epoch loop

    real = engine.F.cross_entropy
    monkeypatch.setattr(engine.F, "cross_entropy", lambda *a, **k: real(*a, **k) * float("nan"))
    cfg = load_run_config(None, [f"train.out_dir={tmp_path}", "train.epochs=2", "train.run_name=r"])
    with pytest.raises(TrainingError, match="No epoch had completed"):
        train(cfg, log=lambda *_: None)
    assert not (tmp_path / "r" / "train_state.pt").exists()


def test_report_plot_with_widths_bernoulli_and_dense(tmp_path: Path) -> None:
    from supermask.report import plot

    def row(width: float, method: str, init: str, k: float | None, acc: float) -> dict:
        kept = 100 * (k or 1.0)
        return dict(dataset="d", model="conv4", width=width, method=method, weight_init=init, k=k, epochs=2,
                    kept_percent=kept, seeds=1, accuracy_mean=acc, accuracy_std=None, settings="")  # fmt: skip

    summary = [row(w, "edge-popup", "signed_constant", 0.5, 40 + w) for w in (0.5, 1.0, 2.0)]
    summary += [row(w, "dense", "learned", None, 45 + w) for w in (0.5, 1.0)]
    summary += [row(1.0, "bernoulli", "signed_constant", None, 30), row(1.0, "edge-popup", "kaiming_normal", 0.5, 39)]
    out = plot(summary, tmp_path / "r.png", ["cpu"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_gives_no_std_for_one_seed(tmp_path: Path) -> None:
    from supermask.report import write_report

    def result(name: str, method: str, seed: int, acc: float) -> None:
        d = tmp_path / name
        d.mkdir()
        r = dict(dataset="d", model="m", width=1.0, method=method, weight_init="signed_constant", k=0.5, seed=seed,
                 epochs=1, kept_fraction=0.5, accuracy=acc, device="cpu")  # fmt: skip
        (d / "result.json").write_text(json.dumps(r))

    result("a0", "edge-popup", 0, 0.50)
    result("a1", "edge-popup", 1, 0.52)
    result("b0", "dense", 0, 0.60)
    write_report(tmp_path)
    rows = [r for r in (tmp_path / "results.md").read_text().splitlines()[2:] if r.startswith("|")]
    assert [r.split("|")[-2].strip() for r in rows] == ["60.00", "51.00 ± 1.41"]
    csv_rows = (tmp_path / "results.csv").read_text().splitlines()
    assert csv_rows[1].endswith(",60.0,")  # the std column is empty, not 0


def test_report_names_unfinished_runs_it_leaves_out(tmp_path: Path) -> None:
    """A report made while a sweep runs must not pass for the whole grid: runs that started (config.yaml
    with metrics or a training state) but have no result.json are named in results.md and on stderr."""
    from supermask.report import unfinished_runs, write_report

    def run_dir(name: str, *files: str) -> Path:
        d = tmp_path / "runs" / name
        d.mkdir(parents=True)
        for f in files:
            (d / f).write_text("{}")
        return d

    done = run_dir("done", "config.yaml", "metrics.jsonl")
    r = dict(dataset="d", model="m", width=1.0, method="edge-popup", weight_init="signed_constant", k=0.5,
             seed=0, epochs=1, kept_fraction=0.5, accuracy=0.5, device="cpu")  # fmt: skip
    (done / "result.json").write_text(json.dumps(r))
    (done / "supermask").mkdir()  # its exported checkpoint: not a run
    (done / "supermask" / "config.yaml").write_text("{}")
    write_report(tmp_path / "runs")
    assert "unfinished" not in (tmp_path / "runs" / "results.md").read_text()
    running = run_dir("running", "config.yaml", "metrics.jsonl")
    stopped = run_dir("stopped", "config.yaml", "train_state.pt")
    run_dir("never-started", "config.yaml")  # nothing trained: no run to speak of
    assert sorted(unfinished_runs(tmp_path / "runs")) == [running, stopped]
    write_report(tmp_path / "runs")
    note = (tmp_path / "runs" / "results.md").read_text().splitlines()[-1]
    assert note == "Not in the table: 2 unfinished run(s) (no result.json yet): running, stopped."
    rep = run_cli("report", "runs", cwd=tmp_path)
    assert rep.returncode == 0 and "note: 2 unfinished run(s) left out of the table" in rep.stderr


@pytest.mark.parametrize(
    "edit, message",
    [
        ("{", "cannot be read as a run's result"),
        ("[]", "is not a run's result"),
        ('{"accuracy": 1.7, "kept_fraction": 0.5}', "accuracy=1.7 is not a fraction"),
        ('{"accuracy": NaN, "kept_fraction": 0.5}', "accuracy=nan is not a fraction"),
        ('{"accuracy": "0.5", "kept_fraction": 0.5}', "accuracy='0.5' is not a fraction"),
        ('{"kept_fraction": 0.5}', "accuracy=None is not a fraction"),
        ('{"accuracy": 0.5, "kept_fraction": true}', "kept_fraction=True is not a fraction"),
    ],
)
def test_report_stops_at_a_damaged_result_instead_of_leaving_it_out(tmp_path: Path, edit: str, message: str) -> None:
    """A result.json that cannot be read, or holds an impossible figure, is named in a one-line error:
    never silently left out of its row's n and mean, never averaged in."""
    from supermask.report import write_report

    for seed in (0, 1):
        d = tmp_path / f"r{seed}"
        d.mkdir()
        r = dict(dataset="d", model="m", width=1.0, method="edge-popup", weight_init="signed_constant", k=0.5,
                 seed=seed, epochs=1, kept_fraction=0.5, accuracy=0.5, device="cpu")  # fmt: skip
        (d / "result.json").write_text(json.dumps(r))
    write_report(tmp_path)
    (tmp_path / "r1" / "result.json").write_text(edit)
    with pytest.raises(SupermaskError, match=re.escape(message)) as caught:
        write_report(tmp_path)
    assert str(tmp_path / "r1" / "result.json") in str(caught.value) and "\n" not in str(caught.value)


def test_report_never_pools_different_experiments(tmp_path: Path) -> None:
    """Runs that differ in any setting (here scale_fan, lr, or a seed run twice) are separate rows with
    n = distinct seeds; runs.csv and the table show the setting that tells them apart; one series per row."""
    from supermask.report import _series, collect, summarise, write_report

    common = [f"train.out_dir={tmp_path}", "train.epochs=1", "train.max_steps=2"]
    for seed in (0, 1):
        for extra in ([], ["supermask.scale_fan=true"], ["optim.lr=0.05"]):
            name = f"s{seed}-{'-'.join(extra) or 'plain'}"
            train(load_run_config(None, [*common, *extra, f"train.seed={seed}", f"train.run_name={name}"]), log=print)
    # the same experiment and seed run again elsewhere (e.g. another machine): one seed, not two
    train(load_run_config(None, [*common, "train.seed=0", "train.run_name=again", "train.threads=1"]), log=print)
    summary = summarise(collect(tmp_path))
    assert len(summary) == 3 and all(s["seeds"] == 2 for s in summary)
    assert sorted(s["runs"] for s in summary) == [2, 2, 3]
    assert len({s["settings"] for s in summary}) == 3 and all(s["settings"] for s in summary)
    assert len(_series(summary)) == 3
    write_report(tmp_path)
    header = (tmp_path / "runs.csv").read_text().splitlines()[0].split(",")
    assert "supermask.scale_fan" in header and "optim.lr" in header
    assert (
        "sample standard deviation (n - 1 in the denominator) over those n seeds"
        in (tmp_path / "results.md").read_text()
    )


@pytest.mark.parametrize("method", ["edge-popup", "bernoulli"])
def test_compiled_model_is_one_graph_and_steps_like_eager(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torch.compile the traced selection (the accelerator path, forced here on the CPU) leaves no
    graph break per layer and is recomputed on every step."""
    import copy

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


def test_channels_last_acts_on_image_batches_only(tmp_path: Path) -> None:
    from supermask.train import channels_last_input

    images = torch.randn(2, 3, 4, 4)
    assert channels_last_input(images).is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(channels_last_input(images), images)
    tokens = torch.arange(6).view(2, 3)  # features or token ids: not an error, unchanged
    assert channels_last_input(tokens) is tokens
    cfg = load_run_config(
        None, ["train.channels_last=true", "train.epochs=1", "train.max_steps=3", f"train.out_dir={tmp_path}"]
    )
    assert 0.0 <= train(cfg)["accuracy"] <= 1.0
