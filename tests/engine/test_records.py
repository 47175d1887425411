"""What a run records (supermask.engine.records): the shared result record, the environment per epoch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from supermask.engine.records import run_record
from supermask.train import train
from tests.helpers.runs import QUIET, cfg_for, stop_after_first_epoch


def test_result_records_what_every_epoch_ran_on(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        train(cfg_for(tmp_path, "train.epochs=3", "train.threads=2"), log=stop_after_first_epoch)
    result = train(cfg_for(tmp_path, "train.epochs=3", "train.threads=1"), **QUIET)
    ran_on = [{k: r[k] for k in ("epochs", "threads", "world_size", "device")} for r in result["ran_on"]]
    assert ran_on == [
        {"epochs": [1, 1], "threads": 2, "world_size": 1, "device": "cpu"},
        {"epochs": [2, 3], "threads": 1, "world_size": 1, "device": "cpu"},
    ]
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["threads"] for r in rows] == [2, 1, 1]


def test_single_and_split_task_runs_share_one_record(tmp_path: Path) -> None:
    single = train(cfg_for(tmp_path, "train.epochs=1", "train.max_steps=2", "train.threads=1"), **QUIET)
    split = train(
        cfg_for(tmp_path, "train.epochs=1", "train.max_steps=2", "train.run_name=s", "data.split_tasks=5"), **QUIET
    )
    cfg = cfg_for(tmp_path, "train.epochs=1")
    shared = run_record(cfg, tmp_path, [], torch.device("cpu"), 1, False, False)
    assert shared["dataset"] == "digits" and shared["precision"] == "fp32" and shared["config"] == cfg.to_dict()
    for result in (single, split):
        assert set(shared) <= set(result)  # every key of the record, whichever kind of run wrote it
        assert json.loads((Path(result["run_dir"]) / "result.json").read_text()) == result
    assert split["tasks"] == 5 and len(split["task_accuracy"]) == 5 and split["ran_on"][0]["epochs"] == [1, 5]
