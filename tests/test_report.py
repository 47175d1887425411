"""The report's figure (issue 24, item 7): a title of data set and schedule, the hardware in the caption,
no error bars claimed for n = 1, a legend of what differs, PDF and SVG beside the PNG."""

from __future__ import annotations

from pathlib import Path

import pytest

from supermask import report


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
