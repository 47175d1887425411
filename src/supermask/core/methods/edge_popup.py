"""edge-popup (Ramanujan et al., CVPR 2020): keep the top-k of |score| in each layer, or over all layers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from supermask.core.masks import kept_count, new_hint, topk_mask
from supermask.core.methods.base import MaskMethod, register_method
from supermask.errors import SupermaskConfigError

if TYPE_CHECKING:
    from supermask.core.layers import SupermaskLayer


@register_method
class EdgePopup(MaskMethod):
    """Per layer, the ``kept_count(k, n)`` weights of largest |score| (ties: lower flat index)."""

    name = "edge-popup"
    summary = "scores; top-k of |score| per layer; straight-through, d s = d w_eff * w * sign(s); Ramanujan et al. 2020"

    def select(self, layer: SupermaskLayer) -> Tensor:
        scores = layer.scores
        assert scores is not None
        flat = scores.detach().abs().reshape(-1)
        return topk_mask(flat, layer.kept(), layer._hint).reshape(scores.shape)

    def traceable(self, layer: SupermaskLayer) -> bool:
        return True

    def traced_mask(self, layer: SupermaskLayer) -> Tensor:
        scores = layer.scores
        assert scores is not None
        flat = scores.detach().abs().reshape(-1)
        return topk_mask(flat, layer.kept(), sync_free=True).reshape(scores.shape)


@register_method
class EdgePopupGlobal(EdgePopup):
    """One top-k over all converted layers; every layer keeps at least its best weight."""

    name = "edge-popup-global"
    summary = "scores; one top-k of |score| over all layers (each keeps >= 1); as edge-popup"

    def check(self, sizes: list[int], k: float) -> None:
        check_global_k(k, sizes)

    def setup(self, layers: list[SupermaskLayer]) -> None:
        self.group = GlobalTopK(layers)

    def select(self, layer: SupermaskLayer) -> Tensor:
        return self.group.mask_for(layer)

    def traceable(self, layer: SupermaskLayer) -> bool:
        return False  # the global selection reads every layer: it stays eager


def check_global_k(k: float, sizes: list[int]) -> None:
    """The global guard keeps one weight per layer, so k must keep at least as many as there are layers."""
    if kept_count(k, sum(sizes)) < len(sizes):
        raise SupermaskConfigError(
            f"k={k} keeps fewer weights than there are layers ({len(sizes)}); the global guard "
            "keeps at least one weight per layer, so raise k"
        )


class GlobalTopK:
    """One top-k over all layers of an ``edge-popup-global`` model.

    Guard: each layer's largest-|score| weight is always kept, so no layer is ever emptied; the
    remaining ``K - L`` (K = kept_count(k, total weights), L = number of layers) are the largest
    |scores| of all layers together. The total kept is exactly K (it must be >= L). k is read from
    the layers (``set_k`` sets it on every layer).
    """

    def __init__(self, layers: list[Any]) -> None:
        self.layers = layers
        self._key: tuple[Any, ...] | None = None
        self._masks: dict[int, Tensor] = {}
        self._hint = new_hint()

    def total(self) -> int:
        return sum(int(layer.base_layer.weight.numel()) for layer in self.layers)

    def kept(self) -> int:
        return max(len(self.layers), kept_count(self.layers[0].k, self.total()))

    def mask_for(self, layer: SupermaskLayer) -> Tensor:
        key = tuple(lyr._scores_key() for lyr in self.layers)
        if key != self._key:
            self._masks = self._compute()
            self._key = key
        return self._masks[id(layer)]

    @torch.no_grad()
    def _compute(self) -> dict[int, Tensor]:
        parts = [lyr.scores.detach().abs().reshape(-1).float() for lyr in self.layers if lyr.scores is not None]
        sizes = [p.numel() for p in parts]
        a = torch.cat(parts)
        offsets = torch.tensor([0, *sizes[:-1]], device=a.device).cumsum(0)
        best = torch.stack([p.argmax() for p in parts]) + offsets
        a[best] = float("inf")  # the guard: each layer's best weight is always kept
        mask = topk_mask(a, self.kept(), self._hint)
        return {id(lyr): m.reshape(lyr.scores.shape) for lyr, m in zip(self.layers, mask.split(sizes))}
