"""Tests of supermask.core.methods.signed_supermask."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import supermask
import supermask as sm
from supermask.errors import SupermaskConfigError
from tests.helpers.methods import one_layer


def test_signed_supermask_ternary_rule_and_storage(tmp_path: Path) -> None:
    layer = one_layer("signed-supermask", [[1.0, 2.0], [3.0, 4.0]], [[0.5, -0.5], [0.39, -0.41]])
    assert layer.mask().tolist() == [[1.0, -1.0], [0.0, -1.0]]  # tau = 0.4
    assert layer.weight.tolist() == [[1.0, -2.0], [0.0, -4.0]]
    assert layer.method.mask_bits == 2
    packed = layer.method.pack(layer.mask())
    assert packed.numel() == 1 and torch.equal(layer.method.unpack(packed, (2, 2)), layer.mask())
    with pytest.raises(SupermaskConfigError, match="threshold=-1 .* must be > 0"):
        supermask.SupermaskConfig(method="signed-supermask", options={"threshold": -1})
    with pytest.raises(SupermaskConfigError, match="has no option"):
        supermask.SupermaskConfig(method="signed-supermask", options={"tau": 0.3})


def test_xavier_scores_and_their_relative_threshold() -> None:
    cfg = sm.SupermaskConfig(method="signed-supermask", options={"threshold": 0.4, "score_scale": "xavier"})
    model = sm.to_supermask(nn.Sequential(nn.Linear(784, 300, bias=False), nn.Linear(300, 10, bias=False)), cfg)
    for layer, (fan_in, fan_out) in zip((model[0], model[1]), ((784, 300), (300, 10))):
        bound = math.sqrt(6 / (fan_in + fan_out))
        s = layer.scores.detach()
        assert s.abs().max() <= bound and s.abs().max() > 0.95 * bound  # Xavier-uniform
        mask = layer.mask()
        assert torch.equal(mask, torch.where(s.abs() > 0.4 * bound, torch.sign(s), torch.zeros_like(s)))
        assert abs(float((mask != 0).float().mean()) - 0.6) < 0.05  # 1 - 0.4 of the weights at the start
    with pytest.raises(sm.SupermaskConfigError, match="score_scale"):
        sm.SupermaskConfig(method="signed-supermask", options={"score_scale": "he"})


def test_xavier_scores_with_an_absolute_threshold() -> None:
    """The authors' earlier code: Xavier scores, one threshold for every layer (their default 0.01)."""
    options = {"threshold": 0.01, "score_scale": "xavier", "relative_threshold": False}
    cfg = sm.SupermaskConfig(method="signed-supermask", options=options)
    model = sm.to_supermask(nn.Sequential(nn.Linear(784, 300, bias=False), nn.Linear(300, 10, bias=False)), cfg)
    for layer, (fan_in, fan_out) in zip((model[0], model[1]), ((784, 300), (300, 10))):
        bound = math.sqrt(6 / (fan_in + fan_out))
        s = layer.scores.detach()
        mask = layer.mask()
        assert torch.equal(mask, torch.where(s.abs() > 0.01, torch.sign(s), torch.zeros_like(s)))
        assert abs(float((mask != 0).float().mean()) - (1 - 0.01 / bound)) < 0.05  # 87% and 95% kept
    with pytest.raises(sm.SupermaskConfigError, match="relative_threshold=false .* needs score_scale=xavier"):
        sm.SupermaskConfig(method="signed-supermask", options={"relative_threshold": False})
    with pytest.raises(sm.SupermaskConfigError, match="relative_threshold='no' .* must be a bool"):
        sm.SupermaskConfig(method="signed-supermask", options={"score_scale": "xavier", "relative_threshold": "no"})


def test_xavier_signed_masks_save_and_load_exactly(tmp_path: Path) -> None:
    cfg = sm.SupermaskConfig(method="signed-supermask", options={"score_scale": "xavier"})
    net = lambda: nn.Sequential(nn.Linear(20, 30, bias=False), nn.ELU(), nn.Linear(30, 4, bias=False))  # noqa: E731
    torch.manual_seed(1)
    model = sm.to_supermask(net(), cfg)
    with torch.no_grad():
        model[0].scores.mul_(torch.rand_like(model[0].scores) * 3)
    sm.save(model, tmp_path / "c")
    loaded = sm.load(tmp_path / "c", net())
    x = torch.randn(8, 20)
    assert torch.equal(loaded.eval()(x), model.eval()(x))
