"""Tests of supermask.core.methods.dense."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import supermask
from supermask.core.config import SupermaskConfig


def test_dense_method_trains_weights_through_same_path() -> None:
    m = nn.Sequential(nn.Linear(8, 4))
    supermask.to_supermask(m, SupermaskConfig(method="dense"))
    assert m[0].scores is None and m[0].base_layer.weight.requires_grad
    x = torch.randn(3, 8)
    assert torch.allclose(m(x), F.linear(x, m[0].base_layer.weight, m[0].base_layer.bias))
    assert supermask.sparsity_report(m)["converted"]["fraction"] == 1.0
