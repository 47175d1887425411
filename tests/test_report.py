"""The report's figure (issue 24, item 7): a title of data set and schedule, the hardware in the caption,
no error bars claimed for n = 1, a legend of what differs, PDF and SVG beside the PNG."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from supermask import cli, report
from supermask.errors import SupermaskError
from supermask.precision import recorded_precision
from supermask.report import collect, summarise
from supermask.runconfig import experiment_key, load_run_config
from supermask.train import train
from tests.helpers.runs import QUIET, cfg_for, run_cli, set_native_bf16


def summary(seeds: int = 1) -> list[dict[str, object]]:
    rows = []
    for method, init in (("edge-popup", "signed_constant"), ("biprop", "signed_constant")):
        for k in (0.3, 0.7):
            rows.append({"dataset": "digits", "model": "mlp", "width": 1.0, "method": method, "weight_init": init,
                         "epochs": 10, "settings": "optim.weight_decay=0.0001", "k": k, "kept_percent": 100 * k,
                         "seeds": seeds, "accuracy_mean": 50 + 10 * k, "accuracy_std": 1.0 if seeds > 1 else None})  # fmt: skip
    rows.append({"dataset": "digits", "model": "mlp", "width": 1.0, "method": "dense", "weight_init": "kaiming_normal",
                 "epochs": 10, "settings": "", "k": None, "kept_percent": 100.0, "seeds": seeds,
                 "accuracy_mean": 90.0, "accuracy_std": None})  # fmt: skip
    return rows


def test_report_groups_by_the_precision_that_ran(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    set_native_bf16(monkeypatch, True)
    for seed in (0, 1):
        for setting in ("true", "false"):
            train(
                cfg_for(tmp_path, f"train.bf16={setting}", f"train.seed={seed}", f"train.run_name={setting}{seed}"),
                **QUIET,
            )
    # a result from before bf16 on CPUs: train.bf16=true meant "on CUDA", so this CPU run was fp32
    old = json.loads((tmp_path / "false1" / "result.json").read_text())
    old.pop("ran_on")
    old.pop("precision")
    old["seed"], old["config"]["train"]["seed"], old["config"]["train"]["bf16"] = 2, 2, True
    (tmp_path / "old2").mkdir()
    (tmp_path / "old2" / "result.json").write_text(json.dumps(old))
    assert recorded_precision(old) == "fp32"
    summary = summarise(collect(tmp_path))
    by_precision = {row["settings"]: row["seeds"] for row in summary}
    assert by_precision == {"train.precision=bf16": 2, "train.precision=fp32": 3}, summary
    assert experiment_key(old["config"]) == experiment_key(
        json.loads((tmp_path / "true0" / "result.json").read_text())["config"]
    )


def test_report_over_several_folders_counts_each_run_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    set_native_bf16(monkeypatch, True)
    train(cfg_for(tmp_path / "a", "train.bf16=false"), **QUIET)
    train(cfg_for(tmp_path / "b", "train.bf16=true"), **QUIET)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert cli.main(["report", a, b, a, str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    runs = (tmp_path / "out" / "runs.csv").read_text().splitlines()
    assert len(runs) == 3 and sum("bf16" in line for line in runs[1:]) == 1  # header + one run per folder
    assert "train.precision=fp32" in (tmp_path / "out" / "results.md").read_text()
    assert cli.main(["report", a, b]) == 2
    assert "needs --out DIR" in capsys.readouterr().err
    typo = str(tmp_path / "bb")  # a mistyped folder: an error, not a report of the others without it
    assert cli.main(["report", a, typo, "--out", str(tmp_path / "out2")]) == 2
    assert f"no such run folder: {typo}" in capsys.readouterr().err and not (tmp_path / "out2").exists()


def test_legend_names_only_what_differs() -> None:
    keys = [tuple(report._series(summary()).keys())[i] for i in range(3)]
    labels = report._legend_labels(sorted(keys, key=str))
    assert sorted(labels) == ["biprop (signed_constant)", "dense", "edge-popup (signed_constant)"]
    assert not any("weight_decay" in label or "mlp" in label for label in labels)


def test_caption_holds_the_hardware_and_says_when_there_are_no_error_bars() -> None:
    one = report.caption(summary(1), ["AMD EPYC CPU, 1 threads"])
    assert "digits, 10 epochs" in one and "no error bars" in one and "AMD EPYC CPU" in one
    assert "standard deviation" in report.caption(summary(3), None)
    assert report._title(summary()) == "digits, 10 epochs"


@pytest.mark.parametrize("fmt", ["png", "pdf", "svg"])
def test_the_figure_in_each_format_is_the_same_bytes_every_time(fmt: str) -> None:
    pytest.importorskip("matplotlib")
    first = report.render_plot(summary(3), ["some CPU"], fmt)
    assert first == report.render_plot(summary(3), ["some CPU"], fmt)
    assert first.startswith({"png": b"\x89PNG", "pdf": b"%PDF", "svg": b"<?xml"}[fmt])
    if fmt == "svg":
        assert b"some CPU" not in first  # the hardware is in the caption, not in the figure


def test_write_report_writes_the_figure_formats_and_the_caption(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from supermask import cli

    out = tmp_path / "runs"
    assert cli.main(["sweep", "configs/mnist/fc.yaml", "data.name=digits", "train.epochs=1", "train.max_steps=2",
                     "supermask.k=0.3,0.7", f"--out={out}"]) == 0  # fmt: skip
    written = {p.name for p in report.write_report(out, tmp_path / "report")}
    assert {"results.png", "results.pdf", "results.svg", "results.caption.txt"} <= written


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


@pytest.mark.slow
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
