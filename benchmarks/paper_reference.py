"""REFERENCE ONLY: a faithful re-implementation of the paper code's selection (allenai/hidden-networks).

Its ``GetSubnet`` sorts every layer's |scores| on every forward pass and keeps the top
``k`` fraction (there called ``prune_rate``); the frozen weight is multiplied by that float mask.
Kept here to benchmark supermask against it; not part of the library.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, autograd, nn


class GetSubnet(autograd.Function):
    @staticmethod
    def forward(ctx, scores: Tensor, k: float) -> Tensor:  # type: ignore[override]
        out = scores.clone()
        _, idx = scores.flatten().sort()
        j = int((1 - k) * scores.numel())
        flat_out = out.flatten()
        flat_out[idx[:j]] = 0
        flat_out[idx[j:]] = 1
        return out

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return g, None


def _add_scores(layer: nn.Conv2d | nn.Linear, k: float) -> None:
    """As the paper's layers: kaiming-uniform scores, a frozen weight, the kept fraction k."""
    layer.scores = nn.Parameter(torch.empty_like(layer.weight))
    nn.init.kaiming_uniform_(layer.scores, a=math.sqrt(5))
    layer.weight.requires_grad = False
    layer.k = k


class SubnetConv(nn.Conv2d):
    def __init__(self, *args, k: float = 0.5, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        _add_scores(self, k)

    def forward(self, x: Tensor) -> Tensor:
        subnet = GetSubnet.apply(self.scores.abs(), self.k)
        w = self.weight * subnet
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class SubnetLinear(nn.Linear):
    def __init__(self, *args, k: float = 0.5, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        _add_scores(self, k)

    def forward(self, x: Tensor) -> Tensor:
        subnet = GetSubnet.apply(self.scores.abs(), self.k)
        return F.linear(x, self.weight * subnet, self.bias)


def to_paper_subnet(model: nn.Module, k: float) -> nn.Module:
    """Replace every nn.Conv2d / nn.Linear by the paper's Subnet layers (same shapes and options)."""
    for name, child in list(model.named_children()):
        if type(child) is nn.Conv2d:
            new: nn.Module = SubnetConv(
                child.in_channels,
                child.out_channels,
                child.kernel_size,
                child.stride,
                child.padding,
                child.dilation,
                child.groups,
                child.bias is not None,
                k=k,
            )
            setattr(model, name, new)
        elif type(child) is nn.Linear:
            setattr(model, name, SubnetLinear(child.in_features, child.out_features, child.bias is not None, k=k))
        else:
            to_paper_subnet(child, k)
    return model
