"""Gem-Miner ("Rare Gems", Sreenivasan et al., NeurIPS 2022): scores in [0, 1], a 0.5 threshold, and
permanent pruning on a schedule toward the target density k."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import Tensor

from supermask.core import rng
from supermask.core.masks import kept_count, pack_bits, topk_mask, unpack_bits, version_key
from supermask.core.methods.base import ThresholdRule, register_method
from supermask.errors import SupermaskConfigError

if TYPE_CHECKING:
    from supermask.core.layers import SupermaskLayer


@dataclass
class GemMinerOptions:
    """``l2``: lambda of the penalty lambda * ||s||^2 on the scores (the paper: 1e-4). ``period``: epochs
    between permanent prunings (5). ``prune_rate``: p, the fraction of the active weights each pruning
    removes; 0 (default): the p that reaches k at the last pruning that still leaves ``period`` epochs of
    training after it, 1 - k^(1 / rounds) with rounds = max(1, epochs // period - 1)."""

    l2: float = 1e-4
    period: int = 5
    prune_rate: float = 0.0

    def __post_init__(self) -> None:
        if not self.l2 >= 0:
            raise SupermaskConfigError(f"option l2={self.l2} of method 'gem-miner' must be >= 0")
        if not self.period >= 1:
            raise SupermaskConfigError(f"option period={self.period} of method 'gem-miner' must be >= 1")
        if not 0 <= self.prune_rate < 1:
            raise SupermaskConfigError(f"option prune_rate={self.prune_rate} of method 'gem-miner' must be in [0, 1)")


@register_method
class GemMiner(ThresholdRule):
    """Scores start U[0, 1]; mask = score > 0.5 and not permanently pruned; straight-through
    d score = d w_eff * W plus the L2 penalty's 2 * lambda * s; scores clamped to [0, 1] after every
    step. At the end of every ``period``-th epoch, each layer's active weights are cut (lowest scores
    first, permanently) to density_t = max(k, (1 - p)^(epoch // period)) of the layer. k is the target:
    the final density is at most k (the 0.5 threshold may keep fewer)."""

    name = "gem-miner"
    summary = (
        "scores in [0, 1] (clamped); mask = s > 0.5 and not pruned; d s = d w_eff * w + 2 l2 s; permanent pruning"
        " to k every 5 epochs; Sreenivasan et al. 2022"
    )
    exact_k = False
    own_buffers = ("pruned",)
    supports_tasks = False  # one permanent-pruning state per layer, shared by every task
    Options = GemMinerOptions
    recommended_optim: ClassVar[dict[str, object]] = {"weight_decay": 0.0}

    def ignored_fields(self) -> set[str]:
        return super().ignored_fields() | {"score_init", "score_init_value"}

    def why_layers_do_not_keep_k(self) -> str:
        # measured: scale_fan at k = 0.05 on Conv4 (about half of each layer kept until the first pruning)
        # gave a training loss of 5.4 million in the first epoch and a dead network (loss ln 10) after it
        return (
            "keeps about half of each layer (scores > 0.5) until its permanent pruning brings the density down "
            "to k, at the end of the schedule"
        )

    def initial_scores(self, name: str, shape: tuple[int, ...], fan_shape: tuple[int, ...]) -> Tensor | None:
        key = rng.derive_key("scores", self.config.seed, name, tuple(shape), "gem-miner")
        return torch.from_numpy(rng.random_uniform(key, math.prod(shape)).astype(np.float32).reshape(shape))

    def setup(self, layers: list[SupermaskLayer]) -> None:
        for layer in layers:
            layer.register_buffer("pruned", torch.zeros_like(layer.base_layer.weight, dtype=torch.bool))

    def select(self, layer: SupermaskLayer) -> Tensor:
        scores = layer.scores
        assert scores is not None
        return (scores.detach() > 0.5) & ~layer.pruned

    def cache_key(self, layer: SupermaskLayer) -> tuple[object, ...]:
        return (version_key(layer.pruned),)

    def before_step(self, layers: list[SupermaskLayer]) -> None:
        if self.options.l2:
            for layer in layers:
                if layer.scores is not None and layer.scores.grad is not None:
                    layer.scores.grad.add_(layer.scores.detach(), alpha=2.0 * self.options.l2)

    @torch.no_grad()
    def after_step(self, layers: list[SupermaskLayer]) -> None:
        for layer in layers:
            if layer.scores is not None:
                layer.scores.clamp_(0.0, 1.0)

    def density(self, epoch: int, epochs: int) -> float:
        """The schedule: the fraction of each layer left active after ``epoch`` (counted from 1)."""
        k = self.config.k
        rounds = max(1, epochs // self.options.period - 1)  # the last ``period`` epochs train the final mask
        p = self.options.prune_rate or 1.0 - k ** (1.0 / rounds)
        return max(k, (1.0 - p) ** (epoch // self.options.period))

    def schedule_problem(self, epochs: int, steps: int) -> str:
        period, k = self.options.period, self.config.k
        if epochs < period:
            return (
                f"gem-miner prunes at the end of every period={period}-th epoch, so a run of train.epochs={epochs} "
                f"never prunes and keeps about half of each layer instead of k={k}: set "
                f"supermask.options.period={max(1, epochs // 2)} (it prunes to k by epoch {max(1, epochs // 2)} and "
                f"trains the final mask after), or train.epochs={2 * period} or more"
            )
        reached = self.density(epochs // period * period, epochs)
        if reached > k * (1 + 1e-9):
            return (
                f"gem-miner's schedule (prune_rate={self.options.prune_rate}, period={period}) leaves "
                f"{reached:.4g} of each layer after its last pruning in {epochs} epochs, above k={k}: raise "
                "supermask.options.prune_rate, or set it to 0 (the rate that reaches k)"
            )
        return ""

    @torch.no_grad()
    def on_epoch_end(self, layers: list[SupermaskLayer], epoch: int, epochs: int) -> None:
        if epoch % self.options.period:
            return
        density = self.density(epoch, epochs)
        for layer in layers:
            scores = layer.scores
            assert scores is not None
            target = kept_count(density, scores.numel())
            if int((~layer.pruned).sum()) <= target:
                continue
            ranked = scores.detach().float().masked_fill(layer.pruned, -math.inf).reshape(-1)
            keep = topk_mask(ranked, target).reshape(scores.shape)  # the lowest scores go first
            layer.pruned.copy_(~keep)

    def extra_state(self, layers: list[SupermaskLayer]) -> dict[str, Tensor]:
        return {f"pruned/{layer.layer_name}": pack_bits(layer.pruned) for layer in layers}

    def load_extra_state(self, layers: list[SupermaskLayer], tensors: dict[str, Tensor]) -> None:
        for layer in layers:
            key = f"pruned/{layer.layer_name}"
            if key not in tensors:
                raise KeyError(f"{key} is missing")
            layer.pruned.copy_(unpack_bits(tensors[key], tuple(layer.pruned.shape)))
