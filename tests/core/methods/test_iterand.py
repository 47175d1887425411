"""Tests of supermask.core.methods.iterand."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import supermask
from supermask.core.init import generate_weight
from supermask.errors import SupermaskConfigError


def _iterand(seed: int = 4, n: int = 200, rate: float = 0.1) -> nn.Module:
    cfg = supermask.SupermaskConfig(method="iterand", k=0.5, seed=seed, options={"rerand_freq": 1, "rate": rate})
    return supermask.to_supermask(nn.Sequential(nn.Linear(n, n)), cfg)


def test_iterand_redraws_pruned_weights_at_its_rate_and_deterministically() -> None:
    a, b = _iterand(), _iterand()
    before = a[0].base_layer.weight.detach().clone()
    mask = a[0].mask().clone()
    a[0].method.after_step([a[0]])  # rerand_freq = 1: round 1 now
    changed = a[0].base_layer.weight != before
    assert not bool((changed & mask).any())  # kept weights never change
    redrawn = a[0].iterand_round == 1
    share = float(redrawn.sum()) / float((~mask).sum())
    assert 0.08 < share < 0.12  # rate 0.1 of the pruned weights
    assert bool((redrawn & mask).sum() == 0) and bool(changed.le(redrawn).all())
    b[0].method.after_step([b[0]])
    assert torch.equal(a[0].base_layer.weight, b[0].base_layer.weight)  # a pure function of the seed
    assert not torch.equal(_iterand(seed=5)[0].base_layer.weight, before)


def test_set_k_with_scale_fan_keeps_iterand_redraws_and_save_load_exact(tmp_path: Path) -> None:
    """With scale_fan the weights depend on k: set_k regenerates them, re-drawn ones included (it used to
    drop IteRand's re-draws, and the checkpoint saved after it refused to load: checksum mismatch)."""
    model = supermask.to_supermask(
        nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)),
        supermask.SupermaskConfig(method="iterand", k=0.5, scale_fan=True, options={"rerand_freq": 2, "rate": 0.5}),
    )
    layers = [layer for _, layer in supermask.supermask_layers(model)]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x = torch.randn(8, 16)
    for _ in range(4):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
        layers[0].method.after_step(layers)
    assert int(layers[0].iterand_round.max()) == 2  # two rounds re-drew weights
    supermask.set_k(model, 0.25)
    for layer in layers:  # every weight at the new scale: round r's draw where r re-drew it, else the seed's
        fresh = generate_weight(
            layer.layer_name, tuple(layer.weight.shape), model.supermask_config, 0.25, layer.fan_shape()
        )
        for r in (1, 2):
            redraw = generate_weight(
                layer.layer_name,
                tuple(layer.weight.shape),
                model.supermask_config,
                0.25,
                layer.fan_shape(),
                salt=f"iterand-{r}",
            )
            fresh = torch.where(layer.iterand_round == r, redraw, fresh)
        assert torch.equal(layer.base_layer.weight, fresh)
    model.eval()
    supermask.save(model, tmp_path / "ck")
    loaded = supermask.load(tmp_path / "ck", nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))).eval()
    assert torch.equal(loaded(x), model(x))


def test_scale_fan_with_a_method_whose_layers_do_not_keep_k_is_refused_by_to_supermask_too() -> None:
    for method, options in [("edge-popup-global", {}), ("biprop", {"scope": "global"}), ("gem-miner", {})]:
        cfg = supermask.SupermaskConfig(method=method, options=options, scale_fan=True)
        model = nn.Sequential(nn.Linear(8, 8))
        before = model[0].weight.clone()
        with pytest.raises(SupermaskConfigError, match="Use supermask.scale_fan=false"):
            supermask.to_supermask(model, cfg)
        assert torch.equal(model[0].weight, before) and not supermask.supermask_layers(model)  # unchanged


def test_iterand_checkpoint_rebuilds_the_weights_and_stays_compact(tmp_path: Path) -> None:
    model = _iterand(n=300)
    layer = model[0]
    g = torch.Generator().manual_seed(0)
    for _ in range(130):  # 130 rounds (100 CIFAR epochs at 391 steps, every 300 steps), masks changing
        with torch.no_grad():
            layer.scores.add_(torch.randn(layer.scores.shape, generator=g) * 0.3 * layer.scores.abs().mean())
        layer.method.after_step([layer])
    x = torch.randn(4, 300)
    with torch.no_grad():
        out = model.eval()(x)
    supermask.save(model, tmp_path / "ck")
    loaded = supermask.load(tmp_path / "ck", nn.Sequential(nn.Linear(300, 300))).eval()
    assert torch.equal(loaded[0].base_layer.weight, layer.base_layer.weight)
    with torch.no_grad():
        assert torch.equal(loaded(x), out)
    size = sum(f.stat().st_size for f in (tmp_path / "ck").iterdir())
    fp32 = 4 * (300 * 300 + 300)
    assert size <= fp32 / 4, (size, fp32)
