"""biprop / multi-prize tickets (Diffenderfer & Kailkhura, ICLR 2021): binary weights with one scale per
layer, alpha * sign(W), masked by edge-popup's top-k of |score|."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from supermask.core.masks import version_key
from supermask.core.methods.base import register_method
from supermask.core.methods.edge_popup import GLOBAL_SELECTION, EdgePopup, GlobalTopK, check_global_k
from supermask.errors import SupermaskConfigError

if TYPE_CHECKING:
    from supermask.core.layers import SupermaskLayer


@dataclass
class BipropOptions:
    """``scope``: ``layer`` (top-k in each layer, the paper's default) or ``global`` (one top-k over all
    layers, each keeping at least one weight)."""

    scope: str = "layer"

    def __post_init__(self) -> None:
        if self.scope not in ("layer", "global"):
            raise SupermaskConfigError(f"option scope={self.scope!r} of method 'biprop': choose one of: layer, global")


@register_method
class Biprop(EdgePopup):
    """mask = top-k of |score|; effective weight = alpha * sign(W) * mask with alpha = ||mask * W||_1 /
    ||mask||_0 (the mean |W| over the kept weights, a constant for the gradient); straight-through
    d score = d w_eff * alpha * sign(W) * sign(score), edge-popup's rule on the binary weight."""

    name = "biprop"
    summary = (
        "scores; top-k of |score| per layer (options scope=global); w_eff = alpha * sign(W) * mask, alpha = mean"
        " |W| kept; d s = d w_eff * alpha sign(W) sign(s); Diffenderfer & Kailkhura 2021"
    )
    Options = BipropOptions

    def why_layers_do_not_keep_k(self) -> str:
        return GLOBAL_SELECTION if self.options.scope == "global" else ""

    def same_as_another(self) -> str:
        if self.config.weight_init in ("signed_constant", "unsigned_constant"):
            return (
                f"biprop over {self.config.weight_init} weights is edge-popup bit for bit: every kept |W| is one "
                "constant, so alpha * sign(W) = W. The paper's biprop searches real-valued weights: "
                "supermask.weight_init=kaiming_normal"
            )
        return ""

    def check(self, sizes: list[int], k: float) -> None:
        if self.options.scope == "global":
            check_global_k(k, sizes)

    def setup(self, layers: list[SupermaskLayer]) -> None:
        super().setup(layers)
        self.group = GlobalTopK(layers) if self.options.scope == "global" else None

    def select(self, layer: SupermaskLayer) -> Tensor:
        return self.group.mask_for(layer) if self.group is not None else super().select(layer)

    def traceable(self, layer: SupermaskLayer) -> bool:
        return self.group is None

    def weight_transform(self, layer: SupermaskLayer, weight: Tensor, mask: Tensor) -> Tensor:
        with torch.no_grad():  # alpha depends on the mask only (the weights are frozen): a constant
            key = (id(weight), version_key(weight), weight.device)
            cached = layer.__dict__.get("_biprop_parts")
            if cached is None or cached[0] != key:  # |W| and sign(W) change only with the weights
                cached = (key, weight.abs(), torch.sign(weight))
                layer.__dict__["_biprop_parts"] = cached
            _, magnitude, sign = cached
            alpha = (magnitude * mask).sum() / mask.sum().clamp(min=1)
            return sign * alpha
