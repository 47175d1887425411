"""Signed supermasks (Koster et al., ICLR 2022): a mask in {-1, 0, +1} from a threshold on the score."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from supermask.core import rng
from supermask.core.init import fans
from supermask.core.masks import pack_bits, unpack_bits
from supermask.core.methods.base import ThresholdRule, register_method
from supermask.errors import SupermaskConfigError

if TYPE_CHECKING:
    from supermask.core.layers import SupermaskLayer


@dataclass
class SignedOptions:
    """``threshold`` (tau > 0): a weight is kept where |score| > tau, with the sign of its score.
    ``init_scale``: scores start uniform on (-init_scale, init_scale) (so the initial density is
    1 - tau / init_scale). ``score_scale="xavier"`` (the authors' recipe): each layer's scores start
    Xavier-uniform, on (-b, b) with b = sqrt(6 / (fan_in + fan_out)), and its threshold is tau * b (a
    fraction of the largest initial score; ``init_scale`` is then unused), or tau itself with
    ``relative_threshold=False`` (the authors' earlier code, where the update to a fraction never ran
    and every layer kept its default threshold of 0.01)."""

    threshold: float = 0.4
    init_scale: float = 1.0
    score_scale: str = "constant"
    relative_threshold: bool = True

    def __post_init__(self) -> None:
        if self.score_scale not in ("constant", "xavier"):
            raise SupermaskConfigError(
                f"option score_scale={self.score_scale!r} of method 'signed-supermask' must be constant or xavier"
            )
        if not self.relative_threshold and self.score_scale != "xavier":
            raise SupermaskConfigError(
                "option relative_threshold=false of method 'signed-supermask' needs score_scale=xavier "
                "(under score_scale=constant the threshold is absolute already)"
            )
        if not self.threshold > 0:
            raise SupermaskConfigError(f"option threshold={self.threshold} of method 'signed-supermask' must be > 0")
        if not self.init_scale > 0:
            raise SupermaskConfigError(f"option init_scale={self.init_scale} of method 'signed-supermask' must be > 0")


@register_method
class SignedSupermask(ThresholdRule):
    """mask = sign(score) where |score| > tau, else 0; effective weight = W * mask; straight-through
    d score = d w_eff * W. The density emerges. Stored as two bit-planes (kept, negative): 2 bits per weight."""

    name = "signed-supermask"
    summary = "scores; mask = sign(s) if |s| > tau else 0 (in {-1, 0, 1}); d s = d w_eff * w; Koster et al. 2022"
    uses_k = False
    mask_bits = 2
    Options = SignedOptions

    def ignored_fields(self) -> set[str]:
        return super().ignored_fields() | {"score_init", "score_init_value"}

    def _scale(self, fan_shape: tuple[int, ...]) -> float:
        """The half-width of a layer's initial scores (and the unit of its threshold under ``xavier``)."""
        if self.options.score_scale == "xavier":
            fan_in, fan_out = fans(fan_shape)
            return math.sqrt(6.0 / (fan_in + fan_out))
        return self.options.init_scale

    def initial_scores(self, name: str, shape: tuple[int, ...], fan_shape: tuple[int, ...]) -> Tensor | None:
        key = rng.derive_key("scores", self.config.seed, name, tuple(shape), "signed-supermask")
        values = (rng.random_uniform(key, math.prod(shape)) * 2.0 - 1.0) * self._scale(fan_shape)
        return torch.from_numpy(values.astype(np.float32).reshape(shape))

    def layer_threshold(self, layer: SupermaskLayer) -> float:
        """tau, or under ``score_scale="xavier"`` (and ``relative_threshold``) tau times the layer's initial
        half-width."""
        if self.options.score_scale == "xavier" and self.options.relative_threshold:
            return self.options.threshold * self._scale(layer.fan_shape())
        return self.options.threshold

    def select(self, layer: SupermaskLayer) -> Tensor:
        scores = layer.scores
        assert scores is not None
        s = scores.detach()
        return torch.where(s.abs() > self.layer_threshold(layer), torch.sign(s), torch.zeros_like(s))

    def pack(self, mask: Tensor) -> Tensor:
        flat = mask.reshape(-1)
        return pack_bits(torch.cat([flat != 0, flat < 0]))

    def unpack(self, packed: Tensor, shape: tuple[int, ...]) -> Tensor:
        n = math.prod(shape)
        planes = unpack_bits(packed, (2 * n,))
        kept, negative = planes[:n].float(), planes[n:].float()
        if bool((negative > kept).any()):
            raise ValueError("a weight is marked negative but not kept")
        return (kept * (1.0 - 2.0 * negative)).reshape(shape)

    def scores_for(self, layer: SupermaskLayer, mask: Tensor) -> Tensor:
        return mask.float() * (self.layer_threshold(layer) + 1.0)
