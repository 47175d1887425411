"""Tests of supermask.cli."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from supermask import cli


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

    assert re.search(message, err), err


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
