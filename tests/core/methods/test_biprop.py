"""Tests of supermask.core.methods.biprop."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import supermask
from supermask.errors import SupermaskConfigError
from tests.helpers.methods import X, net, one_layer


def test_biprop_alpha_and_binary_weights() -> None:
    layer = one_layer("biprop", [[1.0, -2.0], [3.0, -4.0]], [[0.1, -0.2], [0.9, -0.5]], k=0.5)
    assert layer.mask().tolist() == [[False, False], [True, True]]  # top-2 of |score|
    alpha = (3.0 + 4.0) / 2  # mean |W| over the kept weights
    assert layer.weight.tolist() == [[0.0, -0.0], [alpha, -alpha]]
    with pytest.raises(SupermaskConfigError, match="scope='row'.*choose one of: layer, global"):
        supermask.SupermaskConfig(method="biprop", options={"scope": "row"})


def test_biprop_global_scope_keeps_one_per_layer() -> None:
    model = supermask.to_supermask(
        nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 2)),
        supermask.SupermaskConfig(method="biprop", k=0.1, options={"scope": "global"}),
    )
    rows = supermask.sparsity_report(model)
    assert rows["converted"]["kept"] == round(0.1 * 120) and all(r["kept"] >= 1 for r in rows["layers"])


def test_biprop_with_learned_batchnorm_trains_and_reloads(tmp_path: Path) -> None:
    """The paper's "+BN" variant: biprop's binary weights with BatchNorm's affine parameters learned."""
    torch.manual_seed(0)
    model = supermask.to_supermask(net(), supermask.SupermaskConfig(method="biprop", k=0.3, batchnorm="learned"))
    bn = model[1]
    assert bn.affine and bn.weight.requires_grad and bn.bias.requires_grad
    before = bn.weight.detach().clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.2, momentum=0.9)
    x = torch.randn(8, 3, 8, 8)
    model.train()
    for _ in range(4):
        opt.zero_grad()
        F.cross_entropy(model(x), torch.arange(8) % 5).backward()
        opt.step()
    assert not torch.equal(bn.weight, before)  # the affine parameters trained alongside the scores
    model.eval()
    with torch.no_grad():
        out = model(X)
    supermask.save(model, tmp_path / "ck")
    with torch.no_grad():
        assert torch.equal(supermask.load(tmp_path / "ck", net()).eval()(X), out)
