"""Tests of supermask.core.inspection."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import supermask
from supermask.core.config import SupermaskConfig
from supermask.models import create


def test_resnet_conversion_batchnorm_and_merge() -> None:
    model = create("cifar_resnet18", width=0.25)
    supermask.to_supermask(model, SupermaskConfig(k=0.3))
    convs = [m for m in model.modules() if isinstance(m, supermask.SupermaskLayer)]
    assert len(convs) == 21  # 20 convs (3 downsample) + fc
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(not bn.affine and bn.weight is None for bn in bns)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(n.endswith("scores") for n in trainable)
    x = torch.randn(4, 3, 16, 16)
    model.train()
    model(x)  # updates BatchNorm statistics
    model.eval()
    with torch.no_grad():
        y = model(x)
    merged = supermask.merge(model)
    assert not any(isinstance(m, supermask.SupermaskLayer) for m in merged.modules())
    with torch.no_grad():
        assert torch.equal(merged(x), y)
    conv = merged.layer1[0].conv1
    assert type(conv) is nn.Conv2d and conv.weight.requires_grad
    assert int((conv.weight != 0).sum()) == supermask.kept_count(0.3, conv.weight.numel())


def test_set_k_and_errors() -> None:
    m = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    cfg = SupermaskConfig(k=0.5)
    supermask.to_supermask(m, cfg)
    supermask.set_k(m, 0.3)
    assert cfg.k == 0.5  # the caller's config is not edited
    assert [r["kept"] for r in supermask.sparsity_report(m)["layers"]] == [60, 30]
    assert m.supermask_config.k == 0.3
    for bad in (0, -0.1, 1.01, "0.5", True):
        with pytest.raises(supermask.SupermaskConfigError, match="KEPT"):
            supermask.set_k(m, bad)  # type: ignore[arg-type]
    b = nn.Sequential(nn.Linear(3, 3))
    supermask.to_supermask(b, SupermaskConfig(method="bernoulli"))
    with pytest.raises(supermask.SupermaskConfigError, match="no effect"):
        supermask.set_k(b, 0.3)
    with pytest.raises(supermask.SupermaskError, match="not converted"):
        supermask.set_k(nn.Linear(2, 2), 0.3)


def test_set_k_with_scale_fan_regenerates_weights() -> None:
    m = nn.Sequential(nn.Linear(100, 4))
    supermask.to_supermask(m, SupermaskConfig(k=0.5, scale_fan=True))
    supermask.set_k(m, 0.25)
    w = m[0].base_layer.weight
    assert torch.allclose(w.abs(), torch.full_like(w, (2.0 / (100 * 0.25)) ** 0.5))
