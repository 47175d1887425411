"""What a run says before it starts (issue 24, items 2 and 8): the header, unmasked weights, a run that
is another method's by construction, max_steps, and keys of the wrong section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supermask import cli
from supermask.runconfig import load_run_config

OWN = """
from torch import nn

def mostly_embedding(num_classes, image_size=8, in_channels=1):
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Embedding(5000, 64)  # never converted: most of the weights
            self.head = nn.Linear(in_channels * image_size**2, num_classes, bias=False)

        def forward(self, x):
            return self.head(x.flatten(1))

    return Model()
"""


def test_a_data_root_that_a_shipped_data_set_never_reads_is_named(tmp_path: Path) -> None:
    from supermask.data import DATASETS
    from supermask.train import train

    assert not DATASETS["digits"].reads_root
    assert all(DATASETS[name].reads_root for name in DATASETS if name != "digits")
    cfg = load_run_config(
        None,
        [f"data.root={tmp_path / 'my-images'}", "train.epochs=1", "train.max_steps=1", f"train.out_dir={tmp_path}"],
    )
    lines: list[str] = []
    train(cfg, log=lines.append)
    assert any("data.name=digits reads no folder" in line and "my-images is ignored" in line for line in lines)


def test_header_names_the_schedule_data_and_precision(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    argv = ["train", "train.epochs=1", "train.max_steps=5", "train.bf16=false", f"train.out_dir={tmp_path}"]
    assert cli.main(argv) == 0  # fp32 pinned: the default (auto) is bf16 on a CPU with AVX-512 BF16
    out = capsys.readouterr().out
    assert "run: mlp on digits (1,437 train, 360 test examples); 1 epochs x 5 steps = 5 steps" in out
    assert "train.max_steps=5: 5 of each epoch's 23 steps" in out
    assert "masking 100.0% of the model's weights" in out and "fp32" in out
    assert "(digits, 1 epochs of 5 steps (train.max_steps))" in out
    result = json.loads(next(tmp_path.glob("*/result.json")).read_text())
    assert result["masked_fraction"] == 1.0 and result["steps_per_epoch"] == 5


def test_weights_left_dense_are_warned_and_recorded(tmp_path: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "dense_models_for_test.py").write_text(OWN)
    monkeypatch.syspath_prepend(str(tmp_path))
    items = ["model.name=dense_models_for_test:mostly_embedding", "train.epochs=1", f"train.out_dir={tmp_path / 'r'}"]
    assert cli.main(["train", *items]) == 0
    out = capsys.readouterr().out
    assert "warning: 99.8% of the model's weights are not masked and stay dense (the largest: table" in out
    result = json.loads(next((tmp_path / "r").glob("*/result.json")).read_text())
    assert result["masked_fraction"] == pytest.approx(640 / (640 + 320_000))
    assert result["kept_fraction"] == pytest.approx(0.5, abs=0.01)  # of the masked weights only


def test_biprop_over_constant_weights_says_it_is_edge_popup(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert cli.main(["train", "supermask.method=biprop", "train.epochs=1", f"train.out_dir={tmp_path}"]) == 0
    assert "warning: biprop over signed_constant weights is edge-popup bit for bit" in capsys.readouterr().out
    items = ["supermask.method=biprop", "supermask.weight_init=kaiming_normal", "train.epochs=1"]
    assert cli.main(["train", *items, f"train.out_dir={tmp_path / 'k'}"]) == 0
    assert "bit for bit" not in capsys.readouterr().out


def test_header_summarises_the_conversion_report(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    own = tmp_path / "own_models.py"
    own.write_text(OWN)
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        argv = ["train", "model.name=own_models:mostly_embedding", "train.epochs=1", "train.max_steps=2",
                f"train.out_dir={tmp_path}/runs"]  # fmt: skip
        assert cli.main(argv) == 0
    finally:
        sys.path.remove(str(tmp_path))
    out = capsys.readouterr().out
    assert "converted 1 layers (640 weights); not converted: 1 (320,000 values frozen, 0 learned)" in out
