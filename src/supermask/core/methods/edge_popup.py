"""edge-popup (Ramanujan et al., CVPR 2020): keep the top-k of |score| in each layer, or over all layers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from supermask.core.masks import host_empty, kept_count, new_hint, topk_mask
from supermask.core.methods.base import MaskMethod, register_method
from supermask.errors import SupermaskConfigError

if TYPE_CHECKING:
    from supermask.core.layers import SupermaskLayer


@register_method
class EdgePopup(MaskMethod):
    """Per layer, the ``kept_count(k, n)`` weights of largest |score| (ties: lower flat index)."""

    name = "edge-popup"
    summary = "scores; top-k of |score| per layer; straight-through, d s = d w_eff * w * sign(s); Ramanujan et al. 2020"

    def setup(self, layers: list[SupermaskLayer]) -> None:
        self.segments = SegmentedTopK(layers)

    def select(self, layer: SupermaskLayer) -> Tensor:
        scores = layer.scores
        assert scores is not None
        if scores.device.type != "cpu" and len(self.segments.layers) > 1:
            return self.segments.mask_for(layer)  # every layer's mask at once: a constant number of kernels
        flat = scores.detach().abs().reshape(-1)
        return topk_mask(flat, layer.kept(), layer._hint).reshape(scores.shape)

    def scores_for(self, layer: SupermaskLayer, mask: Tensor) -> Tensor:
        """Distinct values, kept ones above the rest (2 + i/n against i/n): the top-k selects exactly the
        mask when it keeps as many, and sorts fast (0/1 scores are all ties: 10x slower to partition)."""
        ramp = torch.arange(mask.numel(), dtype=torch.float32, out=host_empty((mask.numel(),))).div_(mask.numel())
        return ramp.add_(mask.reshape(-1), alpha=2.0).reshape(mask.shape)  # i/n + 2 where kept (x + 0 = x)

    def selects_rebuilt(self, layer: SupermaskLayer, mask: Tensor) -> bool | None:
        """The rebuilt scores are distinct and every kept one is above every other, so the per-layer top-k
        of |score| is exactly the mask iff the mask keeps ``layer.kept()`` weights: a count, no selection.
        Only for this class's own rule and scores (a subclass that changes either is selected and compared)."""
        own = type(self).select is EdgePopup.select and type(self).scores_for is EdgePopup.scores_for
        return self.kept(mask) == layer.kept() if own else None

    def traceable(self, layer: SupermaskLayer) -> bool:
        return True

    def traced_mask(self, layer: SupermaskLayer) -> Tensor:
        scores = layer.scores
        assert scores is not None
        flat = scores.detach().abs().reshape(-1)
        return topk_mask(flat, layer.kept(), sync_free=True).reshape(scores.shape)


#: why a selection over all layers at once does not keep k in each layer (``why_layers_do_not_keep_k``)
GLOBAL_SELECTION = (
    "selects over all layers at once: each layer keeps another fraction, which changes as the scores train"
)


@register_method
class EdgePopupGlobal(EdgePopup):
    """One top-k over all converted layers; every layer keeps at least its best weight."""

    name = "edge-popup-global"
    summary = "scores; one top-k of |score| over all layers (each keeps >= 1); as edge-popup"

    def why_layers_do_not_keep_k(self) -> str:
        return GLOBAL_SELECTION

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


class LayerGroup:
    """Masks selected for several layers at once, cached until any layer's scores or k change."""

    def __init__(self, layers: list[Any]) -> None:
        self.layers = layers
        self._key: tuple[Any, ...] | None = None
        self._masks: dict[int, Tensor] = {}

    def mask_for(self, layer: SupermaskLayer) -> Tensor:
        key = tuple(lyr._scores_key() for lyr in self.layers)
        if key != self._key:
            self._masks = self.compute()
            self._key = key
        return self._masks[id(layer)]

    def compute(self) -> dict[int, Tensor]:
        """Every layer's mask, {id(layer): mask}."""
        raise NotImplementedError


class SegmentedTopK(LayerGroup):
    """Every layer's own top-k mask at once, without a host sync and with a constant number of tensor
    operations whatever the number of layers (per-layer selection costs about 15 kernel launches per
    layer, which dominated a GPU step).

    All |scores| are concatenated; a stable sort by value (descending) then a stable sort by layer
    leave each layer's entries in one block, largest first and ties in increasing index order; the
    first ``kept_count(k, n)`` positions of each block are kept (a constant pattern, cached), and are
    scattered back. This is exactly the per-layer rule, ties to the lower flat index included.
    """

    def __init__(self, layers: list[Any]) -> None:
        super().__init__(layers)
        self._pattern_key: tuple[Any, ...] | None = None
        self._segment: Tensor | None = None  # layer index of each concatenated entry
        self._keep: Tensor | None = None  # the kept positions of the sorted order

    def _pattern(self, device: torch.device) -> tuple[Tensor, Tensor]:
        sizes = [int(lyr.base_layer.weight.numel()) for lyr in self.layers]
        key = (device, tuple(sizes), tuple(lyr.kept() for lyr in self.layers))
        if key != self._pattern_key or self._segment is None or self._keep is None:
            counts = torch.tensor(sizes)
            self._segment = torch.repeat_interleave(torch.arange(len(sizes)), counts).to(device)
            starts = torch.cumsum(counts, 0) - counts
            rank = torch.arange(int(counts.sum())) - torch.repeat_interleave(starts, counts)
            kept = torch.repeat_interleave(torch.tensor(key[2]), counts)
            self._keep = (rank < kept).to(device)
            self._pattern_key = key
        return self._segment, self._keep

    @torch.no_grad()
    def compute(self) -> dict[int, Tensor]:
        """Every layer's mask, {id(layer): mask}."""
        parts = [lyr.scores.detach().reshape(-1) for lyr in self.layers]
        a = torch.cat(parts).abs()
        segment, keep = self._pattern(a.device)
        by_value = torch.sort(a, descending=True, stable=True).indices
        by_layer = torch.sort(segment[by_value], stable=True).indices
        order = by_value[by_layer]
        mask = torch.zeros_like(a, dtype=torch.bool)
        mask[order] = keep
        sizes = [p.numel() for p in parts]
        return {id(lyr): m.view(lyr.scores.shape) for lyr, m in zip(self.layers, mask.split(sizes))}


class GlobalTopK(LayerGroup):
    """One top-k over all layers of an ``edge-popup-global`` model.

    Guard: each layer's largest-|score| weight is always kept, so no layer is ever emptied; the
    remaining ``K - L`` (K = kept_count(k, total weights), L = number of layers) are the largest
    |scores| of all layers together. The total kept is exactly K (it must be >= L). k is read from
    the layers (``set_k`` sets it on every layer).
    """

    def __init__(self, layers: list[Any]) -> None:
        super().__init__(layers)
        self._hint = new_hint()

    def total(self) -> int:
        return sum(int(layer.base_layer.weight.numel()) for layer in self.layers)

    def kept(self) -> int:
        return max(len(self.layers), kept_count(self.layers[0].k, self.total()))

    @torch.no_grad()
    def compute(self) -> dict[int, Tensor]:
        parts = [lyr.scores.detach().abs().reshape(-1).float() for lyr in self.layers if lyr.scores is not None]
        sizes = [p.numel() for p in parts]
        a = torch.cat(parts)
        offsets = torch.tensor([0, *sizes[:-1]], device=a.device).cumsum(0)
        best = torch.stack([p.argmax() for p in parts]) + offsets
        a[best] = float("inf")  # the guard: each layer's best weight is always kept
        mask = topk_mask(a, self.kept(), self._hint)
        return {id(lyr): m.reshape(lyr.scores.shape) for lyr, m in zip(self.layers, mask.split(sizes))}
