"""Helpers of the mask-method tests: a user-defined method (registered on import), a small network, a
briefly trained model, a one-layer model with set weights and scores."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import supermask
from supermask.core.layers import SupermaskLayer
from supermask.core.masks import topk_mask
from supermask.core.methods import MaskMethod, method_names, register_method


# --- a user's own method, registered in a few lines (the README shows the same) --------------------------
@register_method
class PositiveTopK(MaskMethod):
    """Keep the top-k of the score itself (not of |score|): a weight with a negative score is never kept."""

    name = "positive-top-k"
    summary = "scores; top-k of s per layer; d s = d w_eff * w"

    def select(self, layer: SupermaskLayer) -> Tensor:
        scores = layer.scores.detach()
        return topk_mask(scores.reshape(-1), layer.kept()).reshape(scores.shape)

    def surrogate(self, scores: Tensor) -> Tensor:
        return scores


METHODS = method_names()


def net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


def trained(method: str, steps: int = 4) -> nn.Module:
    torch.manual_seed(0)
    model = supermask.to_supermask(net(), supermask.SupermaskConfig(k=0.3, method=method, seed=2))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.2, momentum=0.9)
    x = torch.randn(8, 3, 8, 8)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), torch.arange(8) % 5).backward()
        opt.step()
    return model.eval()


X = torch.randn(3, 3, 8, 8)


def _user_method(name: str, select: Any) -> type[MaskMethod]:
    return type(name, (PositiveTopK,), {"name": name, "select": select})


def one_layer(method: str, weight: list[list[float]], scores: list[list[float]], **cfg: Any) -> Any:
    lin = nn.Linear(2, 2, bias=False)
    model = supermask.to_supermask(nn.Sequential(lin), supermask.SupermaskConfig(method=method, **cfg))
    layer = model[0].eval()
    with torch.no_grad():
        layer.base_layer.weight.copy_(torch.tensor(weight))
        layer.scores.copy_(torch.tensor(scores))
    return layer
