"""Tests of supermask.core.methods.gem_miner."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import supermask
from supermask.errors import SupermaskConfigError


@pytest.mark.parametrize(
    ("items", "message"),
    [  # a run that cannot follow the method's schedule stops before its first step, with the fix
        (
            ["supermask.method=gem-miner", "train.epochs=2"],
            "never prunes.*supermask.options.period=1 \\(it prunes to k by epoch 1",
        ),
        (
            ["supermask.method=gem-miner", "supermask.k=0.1", "supermask.options.prune_rate=0.2", "train.epochs=10"],
            r"leaves 0\.64 of each layer after its last pruning in 10 epochs, above k=0\.1",
        ),
        (["supermask.method=iterand", "train.epochs=1", "train.max_steps=5"], "has 5: it would never re-draw one"),
    ],
)
def test_a_schedule_the_run_cannot_follow_is_refused(items: list[str], message: str, tmp_path: Path) -> None:
    from supermask.runconfig import load_run_config
    from supermask.train import train

    cfg = load_run_config(None, [*items, f"train.out_dir={tmp_path}"])
    with pytest.raises(SupermaskConfigError, match=message):
        train(cfg, log=lambda *_: None)
    assert not list(tmp_path.rglob("*.json")) and not list(tmp_path.rglob("*.pt"))  # nothing written


def test_gem_miner_with_the_suggested_period_reaches_k_and_trains_after(tmp_path: Path) -> None:
    from supermask.runconfig import load_run_config
    from supermask.train import train

    items = ["supermask.method=gem-miner", "supermask.k=0.1", "supermask.options.period=1", "train.epochs=2"]
    result = train(
        load_run_config(None, [*items, "train.max_steps=3", f"train.out_dir={tmp_path}"]), log=lambda *_: None
    )
    assert result["kept_fraction"] <= 0.1 + 1e-3  # pruned to k at the end of epoch 1 (the 0.5 threshold may keep fewer)


def test_gem_miner_schedule_clamp_penalty_and_permanent_pruning(tmp_path: Path) -> None:
    model = supermask.to_supermask(
        nn.Sequential(nn.Linear(10, 10)), supermask.SupermaskConfig(method="gem-miner", k=0.1)
    )
    layer, method = model[0], model[0].method
    # density_t = max(k, (1 - p)^(epoch // 5)), p = 1 - k^(1/3) for 20 epochs: k reached at epoch 15, so the
    # last 5 epochs train the final mask
    assert [round(method.density(e, 20), 4) for e in (5, 10, 15, 20)] == [0.4642, 0.2154, 0.1, 0.1]
    assert bool(((layer.scores >= 0) & (layer.scores <= 1)).all())  # U[0, 1]
    with torch.no_grad():
        layer.scores.copy_(torch.arange(100.0).reshape(10, 10) / 100)  # score i / 100 at flat index i
    layer.scores.grad = torch.zeros(10, 10)
    method.before_step([layer])
    assert torch.allclose(layer.scores.grad, 2e-4 * layer.scores.detach())  # d(l2 ||s||^2) = 2 l2 s
    with torch.no_grad():
        layer.scores[0, 0] = 1.7
        layer.scores[0, 1] = -0.3
    method.after_step([layer])
    assert layer.scores[0, 0] == 1.0 and layer.scores[0, 1] == 0.0  # clamped to [0, 1]
    method.on_epoch_end([layer], 4, 20)
    assert not layer.pruned.any()  # only every 5th epoch
    method.on_epoch_end([layer], 5, 20)
    flat = layer.pruned.reshape(-1)
    # density 0.4642: 46 stay, the 54 lowest scores go (index 0 was clamped to 1.0, index 1 to 0.0): 1..54
    assert int(flat.sum()) == 100 - 46 and bool(flat[1:55].all()) and not flat[0] and not flat[55:].any()
    mask = layer.eval().mask()
    assert int(mask.sum()) == 46 and not bool((mask & layer.pruned).any())  # s > 0.5 and not pruned
    supermask.save(model, tmp_path / "ck")
    loaded = supermask.load(tmp_path / "ck", nn.Sequential(nn.Linear(10, 10)))
    assert torch.equal(loaded[0].pruned, layer.pruned)


def test_gem_miner_trains_from_the_cli_to_at_most_k(tmp_path: Path) -> None:
    from supermask.runconfig import load_run_config
    from supermask.train import train

    items = ["supermask.method=gem-miner", "supermask.k=0.3", "supermask.options={period: 4}"]
    result = train(load_run_config(None, [*items, f"train.out_dir={tmp_path}"]), log=lambda *_: None)
    assert result["accuracy"] > 0.7 and result["kept_fraction"] <= 0.3 + 1e-9  # chance: 0.1
