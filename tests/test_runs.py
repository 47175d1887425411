"""Runs are never mixed, overwritten or lost; config errors are one line; sweeps scale out (issue 12)."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from supermask import cli
from supermask.core.config import SupermaskConfig
from supermask.errors import RunBusyError, StorageError, SupermaskConfigError, TrainingError
from supermask.runconfig import experiment_key, from_dict, load_run_config, set_key
from supermask.train import RunLock, prepare_run_dir, train

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
QUIET = {"log": lambda *_: None}


def cfg_for(tmp_path: Path, *items: str) -> Any:
    return load_run_config(None, [f"train.out_dir={tmp_path}", "train.run_name=r", "train.epochs=2", *items])


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supermask", *args], cwd=cwd, capture_output=True, text=True, env=ENV, timeout=300
    )


# --- one writer per run directory ----------------------------------------------------------------


def test_a_second_writer_is_refused_at_once_and_the_first_is_unharmed(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    with RunLock(cfg.run_dir()):  # another process's run, as far as the CLI below can tell
        busy = run_cli("train", f"train.out_dir={tmp_path}", "train.run_name=r", cwd=tmp_path)
        with pytest.raises(RunBusyError, match="in use by another supermask process"):
            train(cfg, **QUIET)
    assert busy.returncode == cli.EXIT_BUSY
    assert busy.stderr.count("\n") == 1 and "in use by another supermask process" in busy.stderr
    assert not (cfg.run_dir() / "config.yaml").exists()  # the refused run wrote nothing
    result = train(cfg, **QUIET)  # the lock is released with its holder
    assert len((cfg.run_dir() / "metrics.jsonl").read_text().splitlines()) == 2 and result["accuracy"] > 0.5


def test_resume_false_never_replaces_a_run(tmp_path: Path) -> None:
    first = train(cfg_for(tmp_path), **QUIET)
    with pytest.raises(TrainingError, match="holds a finished run and train.resume=false"):
        train(cfg_for(tmp_path, "train.resume=false"), **QUIET)
    assert json.loads((tmp_path / "r" / "result.json").read_text())["accuracy"] == first["accuracy"]
    with pytest.raises(TrainingError, match=r"different config \(supermask.k: 0.5 -> 0.3\)"):
        train(cfg_for(tmp_path, "supermask.k=0.3"), **QUIET)
    again = train(cfg_for(tmp_path, "supermask.k=0.3", "train.resume=false", "train.overwrite=true"), **QUIET)
    assert again["k"] == 0.3 and json.loads((tmp_path / "r" / "result.json").read_text())["k"] == 0.3


def test_bookkeeping_keys_do_not_block_a_resume(tmp_path: Path) -> None:
    train(cfg_for(tmp_path), **QUIET)
    again = train(cfg_for(tmp_path, "train.progress=none", "data.eval_batch_size=7", "train.threads=1"), **QUIET)
    assert again["epochs"] == 2


def _stop_after_first_epoch(message: str) -> None:
    if message.startswith("epoch 1/"):
        raise KeyboardInterrupt  # as if killed right after epoch 1's checkpoint


def test_world_size_change_is_refused_unless_asked_for(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, "train.epochs=3")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, log=_stop_after_first_epoch)
    with pytest.raises(TrainingError, match=r"trained with 1 process\(es\) \(global batch 64\); resuming with 2"):
        prepare_run_dir(cfg, cfg.run_dir(), world=2)
    state = prepare_run_dir(cfg_for(tmp_path, "train.epochs=3", "train.allow_world_size_change=true"), cfg.run_dir(), 2)
    assert state is not None and state["epoch"] == 1


@pytest.mark.parametrize("split", [1, 2])
def test_a_run_without_its_training_state_is_kept_never_trained_over(tmp_path: Path, split: int) -> None:
    """A run directory copied from another machine (or committed as a summary) has no training state:
    a finished one is kept as it is, an unfinished one is refused, and neither loses its metrics."""
    items = ["train.epochs=3", f"data.split_tasks={split}"]
    state_file = "train_state.pt" if split == 1 else "tasks_state.pt"
    finished = train(cfg_for(tmp_path, *items), **QUIET)
    run = tmp_path / "r"
    (run / state_file).unlink()
    metrics, result = (run / "metrics.jsonl").read_text(), (run / "result.json").read_text()
    again = train(cfg_for(tmp_path, *items), **QUIET)
    assert again == finished and (run / "metrics.jsonl").read_text() == metrics
    assert (run / "result.json").read_text() == result

    (run / "result.json").unlink()  # an unfinished run: recorded epochs, no state to continue from
    with pytest.raises(TrainingError, match=r"holds \d+ recorded epoch\(s\) but no " + state_file.replace(".", r"\.")):
        train(cfg_for(tmp_path, *items), **QUIET)
    assert (run / "metrics.jsonl").read_text() == metrics
    again = train(cfg_for(tmp_path, *items, "train.resume=false", "train.overwrite=true"), **QUIET)
    assert again["epochs"] == 3 and (run / state_file).is_file()


def test_result_records_what_every_epoch_ran_on(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        train(cfg_for(tmp_path, "train.epochs=3", "train.threads=2"), log=_stop_after_first_epoch)
    result = train(cfg_for(tmp_path, "train.epochs=3", "train.threads=1"), **QUIET)
    ran_on = [{k: r[k] for k in ("epochs", "threads", "world_size", "device")} for r in result["ran_on"]]
    assert ran_on == [
        {"epochs": [1, 1], "threads": 2, "world_size": 1, "device": "cpu"},
        {"epochs": [2, 3], "threads": 1, "world_size": 1, "device": "cpu"},
    ]
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["threads"] for r in rows] == [2, 1, 1]


# --- NaN and OS errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["edge-popup", "dense"])
def test_a_nan_made_by_the_last_step_of_an_epoch_stops_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    real = torch.optim.SGD.step
    calls = {"n": 0}
    steps_per_epoch = -(-1437 // 64)  # digits: 1437 training images, batch 64

    def poisoned(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        out = real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2 * steps_per_epoch:  # the very last step of epoch 2: its loss was still finite
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("nan"))
        return out

    monkeypatch.setattr(torch.optim.SGD, "step", poisoned)
    cfg = cfg_for(tmp_path, "train.epochs=3", f"supermask.method={method}")
    with pytest.raises(TrainingError, match=r"non-finite in epoch 2; stopped.*after epoch 1"):
        train(cfg, **QUIET)
    assert torch.load(tmp_path / "r" / "train_state.pt", weights_only=True)["epoch"] == 1


def test_disk_full_names_the_path_keeps_the_last_checkpoint_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import supermask.fileio as fileio

    real = fileio._open_new
    writes = {"n": 0}

    def full_disk(path: Path):  # type: ignore[no-untyped-def]
        f = real(path)
        if path.name.startswith(f"{fileio.TEMP_PREFIX}train_state.pt"):
            writes["n"] += 1
            if writes["n"] == 2:  # epoch 2's checkpoint

                def fail(data: bytes) -> int:
                    raise OSError(28, "No space left on device")

                f.write = fail  # type: ignore[method-assign]
        return f

    monkeypatch.setattr(fileio, "_open_new", full_disk)
    with pytest.raises(StorageError, match=r"cannot write .*train_state.pt: No space left on device"):
        train(cfg_for(tmp_path, "train.epochs=3"), **QUIET)
    assert torch.load(tmp_path / "r" / "train_state.pt", weights_only=True)["epoch"] == 1
    assert not [p.name for p in (tmp_path / "r").iterdir() if p.name.startswith(fileio.TEMP_PREFIX)]
    # a writer killed mid-write (no cleanup) leaves its temporary file; the next run of the directory removes it
    (tmp_path / "r" / f"{fileio.TEMP_PREFIX}train_state.pt.dead").write_bytes(b"half")
    monkeypatch.setattr(fileio, "_open_new", real)
    train(cfg_for(tmp_path, "train.epochs=3"), **QUIET)
    assert not [p.name for p in (tmp_path / "r").iterdir() if p.name.startswith(fileio.TEMP_PREFIX)]


def test_an_unwritable_output_is_one_line_naming_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("not a folder")
    assert cli.main(["train", f"train.out_dir={tmp_path / 'file' / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "file" / "runs") in err


# --- config errors: one line, before any work ----------------------------------------------------


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("supermask.scale_fan=n", "supermask.scale_fan=n must be true or false"),
        ("supermask.scale_fan=off", "must be true or false"),
        ("train.compile=1", "train.compile=1 must be true or false"),
        ("supermask.first_layer_dense=yes", "must be true or false"),
        ("supermask.k=abc", "supermask.k=abc must be a finite number"),
        ("optim.lr=.nan", "must be a finite number"),
        ("train.epochs=1.5", "train.epochs=1.5 must be an integer"),
        ("optim.weight_decay=-1e-4", "optim.weight_decay=-0.0001 is out of range: it must be >= 0"),
        ("train.max_steps=0", "train.max_steps=0 is out of range"),
        ("optim.label_smoothing=1", r"optim.label_smoothing=1.0 is out of range: it must be in \[0, 1\)"),
        ("data.eval_batch_size=0", "data.eval_batch_size=0 is out of range"),
        ("optim.momentum=1.5", "optim.momentum=1.5 is out of range"),
        ("data.batch_size=-3", "data.batch_size=-3 is out of range"),
        ("train.seed=4294967296", r"train.seed=4294967296 is out of range: it must be in \[0, 4294967295\]"),
        ("optim.betas=[0.9]", "must be a list of two numbers"),
        ("model.name=conv_4", r"model.name='conv_4' is not valid \(did you mean 'conv4'\?\)"),
        ("optim.lrr=1", "unknown key 'optim.lrr'; did you mean 'optim.lr'?"),
        ("supermask.methd=dense", "did you mean 'supermask.method'?"),
        ("trian.epochs=3", "did you mean 'train.epochs'?"),
        ("supermask.unconverted=train", "unconverted='train' is not valid; choose one of: freeze, learn"),
        ("train.device=tpu", "train.device='tpu' is not valid"),
        ("optim.lr=[1", "the value of optim.lr is not valid YAML"),
        ("supermask.k", r"config file supermask.k does not exist \(an override needs '='"),
        ("supermask.k=0.3 train.epochs", "is not key=value"),
        (
            "supermask.method=edge-popup-global supermask.scale_fan=true",
            "method 'edge-popup-global' selects over all layers at once.*Use supermask.scale_fan=false",
        ),
        (
            "supermask.method=biprop supermask.options.scope=global supermask.scale_fan=true",
            r"'biprop' \(scope=global\) selects over all layers",
        ),
        (  # about half of each layer is kept until the last pruning: Conv4's loss reached 5.4 million
            "supermask.method=gem-miner supermask.scale_fan=true",
            "method 'gem-miner' keeps about half of each layer.*Use supermask.scale_fan=false",
        ),
    ],
)
def test_config_errors_are_one_line(item: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["train", *item.split()]) == 2
    err = capsys.readouterr().err
    assert err.startswith("supermask: error: ") and err.count("\n") == 1
    import re

    assert re.search(message, err), err


def test_a_saved_global_run_with_scale_fan_still_reads(tmp_path: Path) -> None:
    """The scale_fan check refuses new runs only: runs saved before it still resolve for report and eval."""
    raw = load_run_config(None, ["supermask.method=edge-popup-global"]).to_dict()
    raw["supermask"]["scale_fan"] = True
    assert from_dict(raw).supermask_config().scale_fan is True
    with pytest.raises(SupermaskConfigError, match="selects over all layers at once"):
        load_run_config(None, ["supermask.method=edge-popup-global", "supermask.scale_fan=true"])
    assert load_run_config(None, ["supermask.method=biprop", "supermask.scale_fan=true"]).supermask_config().scale_fan


def test_cuda_on_a_cpu_only_build_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert cli.main(["train", "train.device=cuda"]) == 2
    assert "train.device='cuda' but" in capsys.readouterr().err


def test_yaml_numbers_and_bools_follow_yaml_1_2(tmp_path: Path) -> None:
    cfg = load_run_config(None, ["optim.lr=1e-3", "optim.weight_decay=1.0e38", "supermask.scale_fan=true"])
    assert cfg.optim.lr == 0.001 and cfg.optim.weight_decay == 1e38 and cfg.supermask.scale_fan is True
    assert load_run_config(None, ["train.seed=010"]).train.seed == 10  # decimal, not YAML 1.1's octal
    assert load_run_config(None, ["train.run_name=0.10"]).train.run_name == "0.10"  # a name stays as typed
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 5e-2\nsupermask:\n  scale_fan: True\n")
    assert load_run_config(path, []).optim.lr == 0.05
    path.write_text("optim:\n  lr: [1, 2\n")
    with pytest.raises(SupermaskConfigError, match=r"is not valid YAML \(line 3"):
        load_run_config(path, [])
    path.write_text("- 1\n- 2\n")
    with pytest.raises(SupermaskConfigError, match="must hold a mapping of sections"):
        load_run_config(path, [])
    path.write_text("supermask:\n  scale_fan: no\n")
    with pytest.raises(SupermaskConfigError, match="must be true or false"):
        load_run_config(path, [])


def test_a_key_given_twice_is_an_error_not_the_last_one_silently(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("supermask:\n  k: 0.3\n  method: edge-popup\n  k: 0.5\n")
    with pytest.raises(SupermaskConfigError, match=r"\(line 4, column 3\): duplicate key 'k'"):
        load_run_config(path, [])
    path.write_text("train: {epochs: 1}\ntrain: {seed: 2}\n")
    with pytest.raises(SupermaskConfigError, match="duplicate key 'train'"):
        load_run_config(path, [])
    with pytest.raises(SupermaskConfigError, match="duplicate key 'tau'"):
        load_run_config(None, ["supermask.options={tau: 0.4, tau: 0.5}"])
    with pytest.raises(SupermaskConfigError, match="is a directory, not a YAML file"):
        load_run_config(tmp_path, [])


def test_one_method_option_is_set_by_its_dotted_key(tmp_path: Path) -> None:
    cfg = load_run_config(None, ["supermask.method=biprop", "supermask.options.scope=global"])
    assert cfg.supermask_config().options == {"scope": "global"}
    both = load_run_config(
        None,
        ["supermask.method=signed-supermask", "supermask.options={threshold: 0.3}", "supermask.options.threshold=0.2"],
    )
    assert both.supermask_config().options == {"threshold": 0.2}  # the later setting wins, as for any key
    for items, message in [
        (["supermask.method=biprop", "supermask.options.scope=globl"], "choose one of: layer, global"),
        (["supermask.method=biprop", "supermask.options.sope=global"], "has no option(s) ['sope']; its options: scope"),
        (["supermask.method=edge-popup", "supermask.options.scope=global"], "its options: none"),
    ]:
        with pytest.raises(SupermaskConfigError, match=re.escape(message)):
            load_run_config(None, items)
    runs, _ = cli._sweep_runs(None, ["supermask.method=biprop", "supermask.options.scope=layer,global"], tmp_path)
    assert [r.cfg.supermask_config().options["scope"] for r in runs] == ["layer", "global"]


def test_config_yaml_holds_the_full_resolved_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import dataclasses

    train(cfg_for(tmp_path, "train.epochs=1"), **QUIET)
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    fields = {f.name for f in dataclasses.fields(SupermaskConfig)} - {"seed"}
    assert set(saved["supermask"]) == fields
    assert from_dict(saved).to_dict() == saved
    assert cli.main(["train", "--print-config", "supermask.k=0.3", "train.epochs=1"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["supermask"]["k"] == 0.3 and set(printed["supermask"]) == fields
    assert not (Path.cwd() / "runs" / "mlp-digits-edge-popup-k0.3-s0").exists()  # printed, not run


def test_library_errors_share_one_base_and_bugs_keep_their_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    import supermask
    from supermask import errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), supermask.SupermaskError)
    monkeypatch.setattr(cli, "_cmd_report", lambda args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        cli.main(["report", "x"])


# --- sweeps --------------------------------------------------------------------------------------


def _epoch_lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.startswith("epoch "))


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


def _record_part(out: str, grid: list[str], i: int) -> None:
    from supermask.sweep import _record_sweep

    _record_sweep(Path(out), "c.yaml", grid, [f"train.seed={i}"])


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
    # a value with a slash in it makes one folder name, and two values one name cannot tell apart are refused
    assert [r.name for r in cli._sweep_runs(None, ["supermask.target_modules=net/0,net/2"], tmp_path)[0]] == [
        "mlp-edge-popup_target_modules=net_0",
        "mlp-edge-popup_target_modules=net_2",
    ]
    with pytest.raises(
        SupermaskConfigError, match="two grid points get the run name 'mlp-edge-popup_target_modules=n_0_'"
    ):
        cli._sweep_runs(None, ["supermask.target_modules=n[0],n(0)"], tmp_path)


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


# --- reproducibility -----------------------------------------------------------------------------


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.mark.parametrize("method", ["dense", "edge-popup"])
def test_deterministic_runs_are_bit_identical(tmp_path: Path, method: str) -> None:
    common = ["train.epochs=3", "train.deterministic=true", f"supermask.method={method}"]
    for name in ("a", "b"):
        train(load_run_config(None, [f"train.out_dir={tmp_path}", f"train.run_name={name}", *common]), **QUIET)
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")
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
        train(cfg_for(tmp_path, "train.deterministic=true", "train.threads=1"), log=_stop_after_first_epoch)
    assert set(seen) == {(True, 1)}
    assert torch.get_num_threads() == before and not torch.are_deterministic_algorithms_enabled()
    with pytest.raises(TrainingError, match="ran deterministically with 1 threads.*set train.threads=1"):
        train(cfg_for(tmp_path, "train.deterministic=true", "train.threads=2"), **QUIET)
    assert train(cfg_for(tmp_path, "train.deterministic=true", "train.threads=1"), **QUIET)["deterministic"]


def test_the_run_config_holds_its_supermask_section_checked(tmp_path: Path) -> None:
    cfg = load_run_config(None, ["supermask.options.scope=global", "supermask.method=biprop", "train.seed=7"])
    assert isinstance(cfg.supermask, SupermaskConfig)  # checked when set, not a mapping checked later
    assert (cfg.supermask.method, cfg.supermask.options) == ("biprop", {"scope": "global"})  # options before method
    assert cfg.supermask_config().seed == 7 and cfg.supermask.seed == 0  # the seed is train.seed's
    path = tmp_path / "options_first.yaml"
    path.write_text("supermask: {options: {scope: global}, method: biprop, k: 2.0}\n")
    assert load_run_config(path, ["supermask.k=0.3"]).supermask.k == 0.3  # file and overrides checked together
    with pytest.raises(SupermaskConfigError, match="k=2"):
        load_run_config(path, [])
    # a key left unset follows the others: bias=auto resolves by the weight_init set after it
    assert load_run_config(None, ["supermask.weight_init=pretrained"]).supermask.bias == "frozen"
    before = copy.deepcopy(cfg)
    with pytest.raises(SupermaskConfigError, match="choose one of"):
        set_key(cfg, "supermask.options.scope", "nowhere")
    assert cfg == before and cfg.supermask_settings == before.supermask_settings  # a refused key changes nothing


def test_the_data_options_of_a_paper_pipeline_are_checked_and_part_of_the_experiment(tmp_path: Path) -> None:
    cfg = load_run_config(None, ["data.standardize=per_image", "data.shuffle=false", "data.train_examples=1000"])
    assert (cfg.data.standardize, cfg.data.shuffle, cfg.data.train_examples) == ("per_image", False, 1000)
    saved = load_run_config(None, []).to_dict()
    for key in ("standardize", "shuffle", "train_examples"):
        del saved["data"][key]  # a run saved before these keys existed is the same experiment as their defaults
    assert experiment_key(saved) == experiment_key(load_run_config(None, []).to_dict())
    assert experiment_key(cfg.to_dict()) != experiment_key(load_run_config(None, []).to_dict())
    for item, message in [
        ("data.standardize=whitened", "data.standardize='whitened' is not valid; choose one of: dataset, per_image"),
        ("data.train_examples=0", "data.train_examples"),
        ("data.shuffle=no", "data.shuffle"),
    ]:
        with pytest.raises(SupermaskConfigError, match=re.escape(message)):
            load_run_config(None, [item])
    with pytest.raises(SupermaskConfigError, match="need a data set held as tensors, not data.name=folder"):
        load_run_config(None, ["data.name=folder", f"data.root={tmp_path}", "data.shuffle=false"])
