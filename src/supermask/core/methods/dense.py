"""Learned dense weights through the same code path: the baseline."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from torch import Tensor

from supermask.core.methods.base import MaskMethod, register_method

if TYPE_CHECKING:
    from supermask.core.layers import SupermaskLayer


@register_method
class Dense(MaskMethod):
    """No scores and no mask: the converted layers' weights are trained (from ``weight_init``)."""

    name = "dense"
    summary = "the weights themselves (from weight_init); no mask; ordinary gradients; the baseline"
    uses_k = False
    has_scores = False
    mask_bits = 0
    ignores: ClassVar[frozenset[str]] = frozenset({"score_init", "score_init_value", "bernoulli_eval", "batchnorm"})

    def initial_scores(self, name: str, shape: tuple[int, ...], fan_shape: tuple[int, ...]) -> Tensor | None:
        return None

    def select(self, layer: SupermaskLayer) -> Tensor:
        raise TypeError("method 'dense' has no mask")
