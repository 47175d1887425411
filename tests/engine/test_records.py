"""Tests of supermask.engine.records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supermask.train import train
from tests.helpers.runs import QUIET, _stop_after_first_epoch, cfg_for


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
