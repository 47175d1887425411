"""Tests of supermask.multitask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
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


def test_permuted_tasks_train_one_mask_each_over_all_classes(tmp_path: Path) -> None:
    """PermutedMNIST's layout on digits: every task holds all 10 classes, its pixels in its own order."""
    from supermask.runconfig import load_run_config
    from supermask.train import train

    items = ["data.permuted_tasks=3", "train.epochs=2", f"train.out_dir={tmp_path}", "train.run_name=permuted"]
    result = train(load_run_config(None, items), log=lambda *_: None)
    assert result["tasks"] == 3 and result["classes_per_task"] == 10 and result["config"]["supermask"]["tasks"] == 3
    assert min(result["task_accuracy"]) > 0.6  # chance: 0.1
    assert result["task_inference_accuracy"] > 0.5  # chance: 1/3
    model = supermask.load(tmp_path / "permuted" / "supermask", supermask_mlp(10))
    masks = []
    for task in range(3):
        supermask.set_task(model, task)
        masks.append(next(layer for _, layer in supermask.supermask_layers(model)).mask().clone())
    assert not torch.equal(masks[0], masks[1]) and not torch.equal(masks[1], masks[2])  # a mask per task


def supermask_mlp(classes: int) -> nn.Module:
    from supermask.models import create

    return create("mlp", num_classes=classes, in_channels=1, image_size=8)


def test_each_task_sees_the_images_in_its_own_fixed_pixel_order() -> None:
    from supermask.data import load_arrays
    from supermask.multitask import TaskLoaders, permute_pixels, pixel_permutation
    from supermask.runconfig import load_run_config

    order = pixel_permutation(0, 1, 64)
    assert sorted(order.tolist()) == list(range(64))  # a permutation
    assert np.array_equal(order, pixel_permutation(0, 1, 64))  # fixed by (seed, task)
    assert not np.array_equal(order, pixel_permutation(0, 2, 64)) and not np.array_equal(
        order, pixel_permutation(1, 1, 64)
    )
    x = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4)
    flipped = permute_pixels(x, np.arange(16)[::-1].copy())
    assert np.array_equal(flipped, x[:, :, ::-1, ::-1])  # every channel in the same order
    cfg = load_run_config(None, ["data.permuted_tasks=3", "data.standardize=unit", "data.eval_batch_size=5000"])
    loaders = TaskLoaders(cfg, torch.device("cpu"))
    images, labels = load_arrays("digits", None)["test"]
    for task, test in enumerate(loaders.test_loaders()):
        x_task, y_task = next(iter(test))
        expected = permute_pixels(images, pixel_permutation(cfg.train.seed, task, 64)).astype(np.float32) / 255
        assert torch.equal(y_task, torch.as_tensor(labels)) and torch.allclose(x_task, torch.as_tensor(expected))
    train_loader, _ = loaders[2]
    assert len(train_loader.x) == len(load_arrays("digits", None)["train"][1])  # the whole training set


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["data.permuted_tasks=3", "data.split_tasks=5"], "set one of them"),
        (["data.permuted_tasks=3", "data.augment=true"], "set data.augment=false"),
        (["data.permuted_tasks=3", "data.name=cifar10"], "cifar10 augments by default"),
        (["data.permuted_tasks=3", "supermask.tasks=2"], "needs supermask.tasks=3"),
        (["data.permuted_tasks=3", "data.classes=[0,1]"], "no data.split_tasks or data.permuted_tasks"),
        (["data.permuted_tasks=0"], "data.permuted_tasks"),
    ],
)
def test_a_permuted_task_layout_that_cannot_work_is_refused(items: list[str], message: str) -> None:
    from supermask.runconfig import load_run_config

    with pytest.raises(supermask.SupermaskConfigError, match=message):
        load_run_config(None, items)


def test_extra_outputs_are_never_a_label_and_eval_repeats_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SupSup's superfluous neurons: 6 output units beyond digits' 10 classes, in the loss and the argmax."""
    import json

    from supermask import cli
    from supermask.runconfig import load_run_config
    from supermask.train import load_run, train

    items = ["model.extra_outputs=6", "train.epochs=2", f"train.out_dir={tmp_path}", "train.run_name=r"]
    result = train(load_run_config(None, items), log=lambda *_: None)
    model, _, _ = load_run(str(tmp_path / "r"))
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 16)
    assert result["accuracy"] > 0.6  # chance: 0.1
    assert cli.main(["eval", str(tmp_path / "r"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == result["accuracy"]
    permuted = train(load_run_config(None, [*items, "train.run_name=p", "data.permuted_tasks=2"]), log=lambda *_: None)
    assert permuted["classes_per_task"] == 10 and min(permuted["task_accuracy"]) > 0.6
    with pytest.raises(supermask.SupermaskConfigError, match="model.extra_outputs"):
        load_run_config(None, ["model.extra_outputs=-1"])
