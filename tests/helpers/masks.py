"""Helpers of the mask tests: the gradients a method's straight-through estimator gives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import supermask


def surrogate_grads(method: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    model = nn.Sequential(nn.Linear(6, 5))
    supermask.to_supermask(model, supermask.SupermaskConfig(k=0.4, method=method, score_init="uniform"))
    layer = model[0]
    x = torch.randn(8, 6)
    c = torch.randn(8, 5)
    torch.manual_seed(3)
    out = model(x)
    (out * c).sum().backward()
    # The same effective weight as a leaf: its gradient is d loss / d effective weight.
    torch.manual_seed(3)
    w_eff = (layer.base_layer.weight * layer.mask()).detach().requires_grad_(True)
    (F.linear(x, w_eff, layer.base_layer.bias) * c).sum().backward()
    return layer.scores.grad, w_eff.grad, layer.base_layer.weight, layer.scores.detach()
