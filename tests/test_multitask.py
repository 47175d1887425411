"""Tests of supermask.multitask."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

import supermask
import supermask.core.methods


def mlp_for_split() -> nn.Module:
    from supermask.models import create

    return create("mlp", num_classes=2, in_channels=1, image_size=8)


def test_split_tasks_from_the_cli_resume_and_report(tmp_path: Path) -> None:
    from supermask import cli
    from supermask.runconfig import load_run_config
    from supermask.train import train

    items = ["data.split_tasks=5", "train.epochs=3", f"train.out_dir={tmp_path}"]
    straight = train(load_run_config(None, [*items, "train.run_name=straight"]), log=lambda *_: None)
    assert straight["tasks"] == 5 and len(straight["task_accuracy"]) == 5
    assert min(straight["task_accuracy"]) > 0.9 and straight["task_inference_accuracy"] > 0.2  # chance: 0.2
    assert straight["config"]["supermask"]["tasks"] == 5  # set from data.split_tasks

    def stop_at_task_2(message: str) -> None:
        if message.startswith("task 2 epoch 1/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(load_run_config(None, [*items, "train.run_name=resumed"]), log=stop_at_task_2)
    lines: list[str] = []
    resumed = train(load_run_config(None, [*items, "train.run_name=resumed"]), log=lines.append)
    assert lines[0].startswith("resuming") and not any(m.startswith("task 0 ") for m in lines)
    assert resumed["task_accuracy"] == straight["task_accuracy"]  # task by task, exactly the same run
    loaded = supermask.load(tmp_path / "straight" / "supermask", mlp_for_split())
    assert loaded.supermask_config.tasks == 5
    assert cli.main(["eval", str(tmp_path / "straight")]) == 2  # per-task results live in result.json
    with pytest.raises(supermask.SupermaskConfigError, match="needs supermask.tasks=5"):
        load_run_config(None, ["data.split_tasks=5", "supermask.tasks=3"])
    with pytest.raises(supermask.SupermaskConfigError, match="does not divide digits's 10 classes"):
        load_run_config(None, ["data.split_tasks=3"])
