"""Tests of supermask.sweep."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from supermask import cli
from supermask.errors import SupermaskConfigError
from supermask.sweep import grid_values
from tests.helpers.runs import ENV, run_cli, set_native_bf16


def _epoch_lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.startswith("epoch "))


def _record_part(out: str, grid: list[str], i: int) -> None:
    from supermask.sweep import _record_sweep

    _record_sweep(Path(out), "c.yaml", grid, [f"train.seed={i}"])


def test_sweep_runs_each_precision_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    set_native_bf16(monkeypatch, True)
    grid = ["train.epochs=1", "train.max_steps=2", "train.bf16=auto,true,false"]
    assert cli.main(["sweep", *grid, "--out", str(tmp_path)]) == 0
    assert "mlp-edge-popup_bf16=true: the same experiment as mlp-edge-popup_bf16=auto" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        "mlp-edge-popup_bf16=auto",
        "mlp-edge-popup_bf16=false",
    ]


def test_sweep_runs_one_experiment_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grid = ["train.epochs=1", "train.max_steps=2", "supermask.method=dense", "supermask.k=0.3,0.5,0.7"]
    assert cli.main(["sweep", *grid, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("the same experiment as mlp-dense_k=0.3; run once") == 2
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["mlp-dense_k=0.3"]
    scaled = [*grid, "supermask.scale_fan=true"]  # with scale_fan the weights depend on k: three experiments
    assert cli.main(["sweep", *scaled, "--out", str(tmp_path / "scaled")]) == 0
    assert len([p for p in (tmp_path / "scaled").iterdir() if p.is_dir()]) == 3


def test_sweep_shards_are_disjoint_and_cover_the_grid(tmp_path: Path) -> None:
    grid = ["train.epochs=1", "train.max_steps=1", "supermask.k=0.3,0.5,0.7", "train.seed=0,1"]
    for shard in ("1/3", "2/3", "3/3"):
        assert cli.main(["sweep", *grid, "--out", str(tmp_path / shard[0]), "--shard", shard]) == 0
    runs = [sorted(p.name for p in (tmp_path / s).iterdir() if p.is_dir()) for s in "123"]
    assert all(len(r) == 2 for r in runs) and len(set(sum(runs, []))) == 6
    with pytest.raises(SupermaskConfigError, match="I/N with 1 <= I <= N"):
        cli._parse_shard("4/3")


def test_parts_of_one_sweep_add_to_one_record(tmp_path: Path) -> None:
    """Parts of a sweep run side by side (--only) keep one sweep.yaml naming every part; another grid or
    the whole grid replaces it."""
    from supermask.sweep import _record_sweep

    grid = ["supermask.k=0.3,0.5", "train.seed=0,1"]
    read = lambda: yaml.safe_load((tmp_path / "sweep.yaml").read_text())  # noqa: E731
    _record_sweep(tmp_path, "c.yaml", grid, ["train.seed=1"])
    _record_sweep(tmp_path, "c.yaml", grid, ["train.seed=0", "train.seed=1"])
    assert read() == {"config": "c.yaml", "items": grid, "only": ["train.seed=1", "train.seed=0"]}
    _record_sweep(tmp_path, "c.yaml", grid, None)  # the whole grid: no longer a part
    _record_sweep(tmp_path, "c.yaml", grid, ["train.seed=0"])
    assert read() == {"config": "c.yaml", "items": grid}
    _record_sweep(tmp_path, "c.yaml", ["train.seed=5"], ["train.seed=5"])  # another sweep: its own record
    assert read() == {"config": "c.yaml", "items": ["train.seed=5"], "only": ["train.seed=5"]}
    (tmp_path / "sweep.yaml").write_text("a: [")  # damaged: replaced
    _record_sweep(tmp_path, None, grid, None)
    assert read() == {"config": None, "items": grid}


def test_parts_finishing_at_once_all_reach_the_record(tmp_path: Path) -> None:
    """16 processes recording their part at the same moment: each read-modify-write takes its turn (without
    the lock, 9-12 of the 16 survived in three tries)."""
    import multiprocessing

    grid = ["train.seed=" + ",".join(str(i) for i in range(16))]
    procs = [multiprocessing.Process(target=_record_part, args=(str(tmp_path), grid, i)) for i in range(16)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert all(proc.exitcode == 0 for proc in procs)
    only = yaml.safe_load((tmp_path / "sweep.yaml").read_text())["only"]
    assert sorted(only) == sorted(f"train.seed={i}" for i in range(16))


def test_sweep_only_runs_a_subset_under_the_whole_grid_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    grid = ["train.epochs=1", "train.max_steps=1", "supermask.k=0.3,0.5", "train.seed=0,1"]
    assert cli.main(["sweep", *grid, "--out", str(tmp_path), "--only", "train.seed=1"]) == 0
    assert [r.name for r in cli._sweep_runs(None, grid, tmp_path, ["supermask.k=0.50"])[0]] == [
        "mlp-edge-popup_k=0.5_seed=0",
        "mlp-edge-popup_k=0.5_seed=1",
    ]  # values compare as numbers, names keep the grid's spelling
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        "mlp-edge-popup_k=0.3_seed=1",
        "mlp-edge-popup_k=0.5_seed=1",
    ]
    assert yaml.safe_load((tmp_path / "sweep.yaml").read_text())["only"] == ["train.seed=1"]
    capsys.readouterr()
    assert cli.main(["sweep", *grid, "--out", str(tmp_path)]) == 0  # the whole grid: the subset is finished
    assert capsys.readouterr().out.count("finished, skipped") == 2
    # left-out points are never resolved: a value that cannot run on this machine does not stop the rest
    import supermask.precision as precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    bf16 = ["train.epochs=1", "train.max_steps=1", "train.bf16=true,false", "--out", str(tmp_path / "p")]
    assert cli.main(["sweep", *bf16]) == 2
    assert cli.main(["sweep", *bf16, "--only", "train.bf16=false"]) == 0
    for bad, message in [
        ("train.epochs=1", "train.epochs is not varied in this sweep (its axes: supermask.k, train.seed)"),
        ("train.seed=5", "5 is not among train.seed's values (0, 1)"),
        ("train.seed", "must be KEY=VALUE"),
    ]:
        with pytest.raises(SupermaskConfigError, match=re.escape(message)):
            cli._sweep_runs(None, grid, tmp_path, [bad])
    with pytest.raises(SupermaskConfigError, match="'supermask.k=0.3,' has an empty value"):
        cli._sweep_runs(None, ["supermask.k=0.3,"], tmp_path)
    # a fixed option of the one method --only keeps is resolved with that method (it was checked against
    # the default method first: "method 'edge-popup' has no option(s) ['period']")
    methods = ["supermask.method=edge-popup,gem-miner", "supermask.options.period=1", "train.seed=0,1"]
    runs, out = cli._sweep_runs(None, methods, None, ["supermask.method=gem-miner"])
    assert [r.name for r in runs] == ["mlp-gem-miner_method=gem-miner_seed=0", "mlp-gem-miner_method=gem-miner_seed=1"]
    assert out == Path("runs") and runs[0].cfg.supermask.options == {"period": 1}
    with pytest.raises(SupermaskConfigError, match=r"method 'edge-popup' has no option\(s\) \['period'\]"):
        cli._sweep_runs(None, methods, None)  # the whole grid: edge-popup has no such option
    # a mapping is one value, as a list is (its commas once made a grid of broken halves)
    options = ["supermask.method=signed-supermask", "supermask.options={threshold: 0.2, score_scale: xavier}"]
    runs, _ = cli._sweep_runs(None, [*options, "train.seed=0,1"], tmp_path)
    assert len(runs) == 2 and runs[0].cfg.supermask.options == {"threshold": 0.2, "score_scale": "xavier"}
    mappings = [
        "supermask.method=signed-supermask",
        "supermask.options={threshold: 0.2},{threshold: 0.3, init_scale: 2}",
    ]
    runs, _ = cli._sweep_runs(None, mappings, tmp_path)  # and several mappings make a grid of them
    assert [r.cfg.supermask.options for r in runs] == [{"threshold": 0.2}, {"threshold": 0.3, "init_scale": 2}]
    assert grid_values("[0, 2],[1], 3") == ["[0, 2]", "[1]", "3"]
    # a value with a slash in it makes one folder name, and two values one name cannot tell apart are refused
    assert [r.name for r in cli._sweep_runs(None, ["supermask.target_modules=net/0,net/2"], tmp_path)[0]] == [
        "mlp-edge-popup_target_modules=net_0",
        "mlp-edge-popup_target_modules=net_2",
    ]
    with pytest.raises(
        SupermaskConfigError, match="two grid points get the run name 'mlp-edge-popup_target_modules=n_0_'"
    ):
        cli._sweep_runs(None, ["supermask.target_modules=n[0],n(0)"], tmp_path)


@pytest.mark.slow
def test_concurrent_sweeps_never_train_a_run_twice(tmp_path: Path) -> None:
    """Two sweep processes (one with --jobs 2) on the same --out: every run is trained exactly once."""
    grid = ["train.epochs=2", "supermask.k=0.3,0.5,0.7", "train.seed=0,1", "--out", "grid"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "supermask", "sweep", *grid, *extra],
            cwd=tmp_path,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for extra in ([], ["--jobs", "2"])
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    runs = sorted(p for p in (tmp_path / "grid").iterdir() if p.is_dir())
    assert len(runs) == 6
    for run in runs:
        assert len((run / "metrics.jsonl").read_text().splitlines()) == 2  # never two runs' metrics in one file
        assert (run / "result.json").is_file()
    logs = outputs[0][0] + "".join((r / "train.log").read_text() for r in runs if (r / "train.log").is_file())
    assert _epoch_lines(logs) == 6 * 2  # 6 runs x 2 epochs, each epoch trained once across both sweeps


@pytest.mark.slow
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
