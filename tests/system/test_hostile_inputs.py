"""Hostile and damaged inputs, second round (issue 25): each is one line and exit 2, nothing changed."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from supermask import cli

BIG = "1" + "0" * 400


LAUGHS = "\n".join(
    [f"a0: &a0 [{','.join(['lol'] * 9)}]"]
    + [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    + ["model: {name: mlp}"]
)


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("supermask: error: ") and err.count("\n") == 1, err
    assert len(err) < 600, f"a message of {len(err)} characters"
    return err


def _trained(tmp_path: Path, *items: str) -> Path:
    out = tmp_path / "runs"
    assert cli.main(["train", f"train.out_dir={out}", "train.epochs=1", *items]) == 0
    return next(d for d in out.iterdir() if d.is_dir())


EVIL = """
from pathlib import Path
Path({marker!r}).write_text("ran")
from torch import nn

def build(num_classes, image_size=8, in_channels=1):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, num_classes))
"""


@pytest.mark.parametrize(
    "item",
    [
        f"supermask.k={BIG}",
        f"model.width={BIG}",
        f"optim.lr={BIG}",
        f"optim.betas=[{BIG}, 0.9]",
        f"optim.warmup_epochs={BIG}",
        f"train.epochs={BIG}",
        "train.threads=99999999999",
        "data.workers=99999999999",
        "data.batch_size=9223372036854775807",
        "data.image_size=1000000000",
        "model.width=1e300",
        "supermask.tasks=1000000",
        f"supermask.method={'x' * 3000}",
        f"train.run_name={'x' * 5000}",
        f"supermask.options.period={BIG}",
    ],
)
def test_every_numeric_and_long_value_is_bounded_before_use(item: str, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _one_line_error(capsys, ["train", item, f"train.out_dir={tmp_path}", "train.epochs=1"])
    assert not any(tmp_path.iterdir())


def test_an_alias_bomb_is_refused_at_once_in_a_file_and_an_override(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "laughs.yaml").write_text(LAUGHS)
    t0 = time.perf_counter()
    err = _one_line_error(capsys, ["train", str(tmp_path / "laughs.yaml")])
    assert "aliases" in err
    inline = (
        "["
        + ", ".join(
            ["&b0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [f"&b{i} [{', '.join([f'*b{i - 1}'] * 9)}]" for i in range(1, 9)]
        )
        + "]"
    )
    err = _one_line_error(capsys, ["train", f"supermask.options.x={inline}"])
    assert "aliases" in err
    deep = "[" * 5000 + "]" * 5000
    _one_line_error(capsys, ["train", f"supermask.options.x={deep}"])
    assert time.perf_counter() - t0 < 20


@pytest.mark.parametrize("damage", ["truncated", "garbage", "folder"])
def test_eval_of_an_unfinished_run_with_a_damaged_state_is_one_line(damage: str, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run = _trained(tmp_path)
    (run / "result.json").unlink()
    import shutil

    shutil.rmtree(run / "supermask")
    state = run / "train_state.pt"
    data = state.read_bytes()
    state.unlink()
    if damage == "truncated":
        state.write_bytes(data[: len(data) // 3])
    elif damage == "garbage":
        state.write_bytes(os.urandom(4000))
    else:
        state.mkdir()
    capsys.readouterr()
    _one_line_error(capsys, ["eval", str(run)])


@pytest.mark.parametrize("what", ["result.json", "supermask/supermask.json", "metrics.jsonl"])
def test_deeply_nested_or_binary_json_in_a_run_is_one_line(what: str, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run = _trained(tmp_path, "train.epochs=5")
    target = run / what
    target.write_text("[" * 100_000 + "]" * 100_000 if what != "metrics.jsonl" else "\x89\xff\xfe binary")
    capsys.readouterr()
    for argv in (["eval", str(run)], ["report", str(run.parent), "--out", str(tmp_path / "rep")]):
        code = cli.main(argv)
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert code == 0 or (code == 2 and err.count("\n") == 1), err


def test_report_of_a_split_task_run_and_a_failed_write_leave_earlier_outputs(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _trained(tmp_path, "data.split_tasks=5", "train.epochs=5")  # per-task metrics: no train_accuracy key
    out = tmp_path / "report"
    assert cli.main(["report", str(tmp_path / "runs"), "--out", str(out)]) == 0
    written = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {"results.md", "results.csv", "runs.csv", "results.png"} <= set(written)
    (out / "results.png").unlink()
    (out / "results.png").mkdir()  # a folder where the plot goes: refused before anything is replaced
    (out / "results.md").write_text("the earlier table\n")
    capsys.readouterr()
    err = _one_line_error(capsys, ["report", str(tmp_path / "runs"), "--out", str(out)])
    assert "results.png" in err and "folder" in err
    assert (out / "results.md").read_text() == "the earlier table\n"
    assert sorted(p.name for p in out.iterdir()) == sorted(written)  # no temporary file left


def test_a_strangers_export_runs_no_code_unless_told(capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "the_module_ran"
    own = tmp_path / "own"
    own.mkdir()
    (own / "stranger_models_xyz.py").write_text(EVIL.format(marker=str(tmp_path / "trained_with")))
    monkeypatch.syspath_prepend(str(own))
    run = _trained(tmp_path, "model.name=stranger_models_xyz:build")
    sys.modules.pop("stranger_models_xyz", None)
    # the stranger's folder: their checkpoint and, beside it, a module of the name it records
    evil = tmp_path / "download"
    evil.mkdir()
    (evil / "stranger_models_xyz.py").write_text(EVIL.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(evil))
    monkeypatch.chdir(evil)
    capsys.readouterr()
    for command in (["eval", str(run)], ["eval", str(run / "supermask")], ["export", str(run), str(tmp_path / "x")]):
        err = _one_line_error(capsys, command)
        assert "--trust-model-code" in err
        assert not marker.exists() and "stranger_models_xyz" not in sys.modules
    capsys.readouterr()
    assert cli.main(["report", str(run.parent), "--out", str(tmp_path / "rep")]) == 0  # a report imports nothing
    assert not marker.exists() and "stranger_models_xyz" not in sys.modules
    _one_line_error(capsys, ["eval", str(run), "--model", "stranger_models_xyz:other"])
    assert not marker.exists()
    assert cli.main(["eval", str(run), "--trust-model-code", "--json"]) == 0  # told: it is imported
    assert marker.exists()
    assert json.loads(capsys.readouterr().out)["accuracy"] > 0.5
