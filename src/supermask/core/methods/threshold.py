"""Threshold masks over real-valued scores: Piggyback (Mallya et al., ECCV 2018) and Zhao et al. 2020."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from supermask.core.methods.base import ThresholdRule, register_method
from supermask.errors import SupermaskConfigError

if TYPE_CHECKING:
    from supermask.core.layers import SupermaskLayer


@dataclass
class ThresholdOptions:
    """``threshold``: a weight is kept where its score > threshold (Piggyback: 5e-3); ``init``: every
    score's starting value (Piggyback: 1e-2, so every weight starts kept)."""

    threshold: float = 5e-3
    init: float = 1e-2

    def __post_init__(self) -> None:
        for key in ("threshold", "init"):
            if not math.isfinite(getattr(self, key)):
                raise SupermaskConfigError(f"option {key} of method 'threshold' must be finite")


@register_method
class Threshold(ThresholdRule):
    """mask = score > threshold; effective weight = W * mask; straight-through d score = d w_eff * W.
    The density emerges (every weight starts kept with the default ``init``)."""

    name = "threshold"
    summary = "scores (start at init); mask = s > threshold; d s = d w_eff * w; Piggyback (Mallya et al. 2018)"
    uses_k = False
    Options = ThresholdOptions
    recommended_optim: ClassVar[dict[str, object]] = {"name": "adam", "lr": 1e-4, "weight_decay": 0.0}

    def ignored_fields(self) -> set[str]:
        return super().ignored_fields() | {"score_init", "score_init_value"}

    def initial_scores(self, name: str, shape: tuple[int, ...], fan_shape: tuple[int, ...]) -> Tensor | None:
        return torch.full(shape, float(self.options.init))

    def select(self, layer: SupermaskLayer) -> Tensor:
        scores = layer.scores
        assert scores is not None
        return scores.detach() > self.options.threshold

    def scores_for(self, layer: SupermaskLayer, mask: Tensor) -> Tensor:
        t = self.options.threshold
        return torch.where(mask, t + abs(t) + 1.0, t - abs(t) - 1.0)
