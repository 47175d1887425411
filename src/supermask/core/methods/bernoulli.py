"""Zhou et al. 2019 ("Deconstructing Lottery Tickets"): mask ~ Bernoulli(sigmoid(score)) while training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from supermask.core.init import generate_uniform
from supermask.core.masks import MaskedWeight
from supermask.core.methods.base import MaskMethod, register_method
from supermask.errors import SupermaskConfigError

if TYPE_CHECKING:
    from supermask.core.layers import SupermaskLayer


@dataclass
class BernoulliOptions:
    """``rescale``: ``none``, or ``dynamic``: Zhou et al.'s dynamic weight rescaling, each layer's masked
    weight multiplied by (weights in the layer) / (weights its present mask keeps), so that the layer's
    weight mass stays the same whatever the density. The factor is part of the graph: its straight-through
    gradient reaches the scores through the kept count's surrogate, the sum of sigmoid(score)."""

    rescale: str = "none"

    def __post_init__(self) -> None:
        if self.rescale not in ("none", "dynamic"):
            raise SupermaskConfigError(
                f"option rescale={self.rescale!r} of method 'bernoulli': choose one of: none, dynamic"
            )


@register_method
class Bernoulli(MaskMethod):
    """Training: a fresh mask ~ Bernoulli(sigmoid(score)) each forward. Eval: one fixed draw
    (``bernoulli_eval="sample"``: u < sigmoid(score), u a counter-based uniform fixed by seed and layer
    name) or the threshold sigmoid(score) > 0.5 (``"threshold"``). Density emerges."""

    name = "bernoulli"
    summary = "scores; mask ~ Bernoulli(sigmoid(s)); d s = d w_eff * w * sigmoid'(s); Zhou et al. 2019"
    uses_k = False
    stochastic = True
    ignores: ClassVar[frozenset[str]] = frozenset()
    recommended_optim: ClassVar[dict[str, object]] = {"lr": 20.0, "weight_decay": 0.0}
    Options = BernoulliOptions

    def select(self, layer: SupermaskLayer) -> Tensor:
        scores = layer.scores
        assert scores is not None
        if self.config.bernoulli_eval == "threshold":
            return scores.detach() > 0
        u = generate_uniform(layer.layer_name, tuple(scores.shape), self.config, self.eval_draw).to(scores.device)
        return u < torch.sigmoid(scores.detach().double())

    def cache_key(self, layer: SupermaskLayer) -> tuple[Any, ...]:
        return (self.eval_draw,)

    def check_eval_draws(self, layers: list[SupermaskLayer]) -> None:
        if self.config.bernoulli_eval != "sample":
            raise SupermaskConfigError(
                f"bernoulli_eval={self.config.bernoulli_eval!r} gives one deterministic eval mask (sigmoid(score) > "
                "0.5): there are no other draws of it; convert with bernoulli_eval='sample' for random draws"
            )
        for layer in layers:
            scores = layer.scores
            assert scores is not None
            p = torch.sigmoid(scores.detach().double())
            if not bool(((p == 0) | (p == 1)).all()):
                return
        raise SupermaskConfigError(
            "every keep probability sigmoid(score) is exactly 0 or 1, so every draw is the same mask (a checkpoint "
            "saved without its scores holds one mask only): evaluate the run directory (its train_state.pt holds the "
            "scores), or save with include_scores=True"
        )

    def sample(self, layer: SupermaskLayer) -> Tensor:
        scores = layer.scores
        assert scores is not None
        return torch.rand_like(scores) < torch.sigmoid(scores.detach())

    def traceable(self, layer: SupermaskLayer) -> bool:
        return layer.training  # eval's fixed draw is generated on the host

    def traced_mask(self, layer: SupermaskLayer) -> Tensor:
        return self.sample(layer)

    def surrogate(self, scores: Tensor) -> Tensor:
        return torch.sigmoid(scores)

    def effective_weight(self, layer: SupermaskLayer, weight: Tensor, scores: Tensor, mask: Tensor) -> Tensor:
        if self.options.rescale == "none":  # under autocast: the cached cast masked (rescaled, it stays fp32)
            return MaskedWeight.apply(weight, scores, mask, True, layer.autocast_weight())
        masked = MaskedWeight.apply(weight, scores, mask, True)
        kept = mask.sum(dtype=torch.float32)
        if torch.is_grad_enabled() and scores.requires_grad:  # the kept count's gradient: that of sum(sigmoid(s))
            p = torch.sigmoid(scores)
            kept = kept + (p - p.detach()).sum()  # adds exactly 0 to the value
        return masked * (mask.numel() / kept.clamp(min=1.0)).to(masked.dtype)

    def scores_for(self, layer: SupermaskLayer, mask: Tensor) -> Tensor:
        return mask.float() * 2e4 - 1e4  # sigmoid(+-1e4) is exactly 1 or 0: either eval rule gives the mask
