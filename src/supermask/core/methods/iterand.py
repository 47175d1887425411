"""IteRand (Chijiwa et al., NeurIPS 2021): edge-popup, plus periodic re-randomisation of pruned weights."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from supermask.core import rng
from supermask.core.init import generate_weight
from supermask.core.methods.base import register_method
from supermask.core.methods.edge_popup import EdgePopup
from supermask.errors import SupermaskConfigError

if TYPE_CHECKING:
    from supermask.core.config import SupermaskConfig
    from supermask.core.layers import SupermaskLayer


@dataclass
class IteRandOptions:
    """``rerand_freq``: optimiser steps between re-randomisations (the paper: 300). ``rate``: lambda, the
    probability that a pruned weight is re-drawn at each of them (0.1)."""

    rerand_freq: int = 300
    rate: float = 0.1

    def __post_init__(self) -> None:
        if not self.rerand_freq >= 1:
            raise SupermaskConfigError(f"option rerand_freq={self.rerand_freq} of method 'iterand' must be >= 1")
        if not 0 < self.rate <= 1:
            raise SupermaskConfigError(f"option rate={self.rate} of method 'iterand' must be in (0, 1]")


@register_method
class IteRand(EdgePopup):
    """edge-popup; every ``rerand_freq`` steps (round r = 1, 2, ...), each weight pruned by the present
    mask is replaced, with probability ``rate``, by a fresh draw from the weight distribution.

    The weights stay a pure function of the seed: round r's coin flips are the counter-based uniforms
    keyed by (seed, layer, "iterand-select", r) and its fresh weights the draw keyed by (seed, layer,
    "iterand-r"), index by index. So a layer's weights are fixed by its seed and, per weight, the last
    round that re-drew it (0: never); checkpoints store those round numbers, deflate-compressed
    (a few bits per weight: about 1/5 of the fp32 weights after 130 rounds at k = 0.5), and ``load``
    rebuilds the weights bit for bit."""

    name = "iterand"
    summary = (
        "scores; edge-popup's top-k; every rerand_freq steps each pruned weight re-drawn with probability rate"
        " (keyed by seed, layer, round); Chijiwa et al. 2021"
    )
    own_buffers = ("iterand_round", "iterand_step")
    supports_tasks = False  # re-drawing a weight pruned by one task's mask changes the others' networks
    Options = IteRandOptions

    def __init__(self, config: SupermaskConfig) -> None:
        super().__init__(config)
        if config.weight_init == "pretrained":
            raise SupermaskConfigError(
                "method 'iterand' re-draws pruned weights from weight_init's distribution, which "
                "weight_init='pretrained' does not have; choose a random weight_init"
            )

    def setup(self, layers: list[SupermaskLayer]) -> None:
        super().setup(layers)
        for layer in layers:
            layer.register_buffer("iterand_round", torch.zeros_like(layer.base_layer.weight, dtype=torch.int32))
            layer.register_buffer("iterand_step", torch.zeros((), dtype=torch.int64))

    def _fresh(
        self, name: str, shape: tuple[int, ...], fan_shape: tuple[int, ...], r: int, k: float | None = None
    ) -> Tensor:
        k = self.config.k if k is None else k
        return generate_weight(name, shape, self.config, k, fan_shape, salt=f"iterand-{r}")

    def _redrawn(
        self, name: str, weight: Tensor, fan_shape: tuple[int, ...], rounds: Tensor, k: float | None = None
    ) -> Tensor:
        """``weight`` with every weight whose last re-draw was round r > 0 replaced by round r's draw."""
        out = weight.clone()
        for r in torch.unique(rounds).tolist():
            if r:
                chosen = rounds == r
                out[chosen] = self._fresh(name, tuple(weight.shape), fan_shape, int(r), k)[chosen]
        return out

    def rebuild_weight(self, layer: SupermaskLayer, weight: Tensor, k: float) -> Tensor:
        return self._redrawn(layer.layer_name, weight, layer.fan_shape(), layer.iterand_round.detach().cpu(), k)

    def schedule_problem(self, epochs: int, steps: int) -> str:
        freq = self.options.rerand_freq
        if steps < freq:
            return (
                f"iterand re-draws pruned weights every rerand_freq={freq} optimiser steps, and this run has "
                f"{steps}: it would never re-draw one and be edge-popup under another name. Set "
                f"supermask.options.rerand_freq={max(1, steps // 2)} or less, or train longer"
            )
        return ""

    @torch.no_grad()
    def after_step(self, layers: list[SupermaskLayer]) -> None:
        for layer in layers:
            layer.iterand_step += 1
        step = int(layers[0].iterand_step)
        if step % self.options.rerand_freq:
            return
        r = step // self.options.rerand_freq
        for layer in layers:
            weight = layer.base_layer.weight
            shape = tuple(weight.shape)
            key = rng.derive_key("iterand-select", self.config.seed, layer.layer_name, shape, r)
            coin = torch.from_numpy(rng.random_uniform(key, math.prod(shape)).reshape(shape) < self.options.rate)
            chosen = (coin.to(weight.device) & ~layer.mask().bool()).reshape(shape)
            fresh = self._fresh(layer.layer_name, shape, layer.fan_shape(), r).to(weight.device, weight.dtype)
            weight.copy_(torch.where(chosen, fresh, weight))
            layer.iterand_round.masked_fill_(chosen, r)

    def extra_state(self, layers: list[SupermaskLayer]) -> dict[str, Tensor]:
        out = {}
        for layer in layers:
            rounds = layer.iterand_round.detach().cpu().numpy().reshape(-1)
            dtype = np.uint8 if rounds.max(initial=0) < 256 else np.uint16 if rounds.max() < 65536 else np.uint32
            raw = np.frombuffer(zlib.compress(rounds.astype(dtype).tobytes(), 9), dtype=np.uint8)
            out[f"rounds/{layer.layer_name}"] = torch.from_numpy(raw.copy())
            out[f"rounds_bytes/{layer.layer_name}"] = torch.tensor(np.dtype(dtype).itemsize)
        return out

    def _rounds(self, name: str, shape: tuple[int, ...], extra: dict[str, Tensor]) -> np.ndarray:
        packed, size = extra[f"rounds/{name}"], extra[f"rounds_bytes/{name}"]
        dtype = {1: np.uint8, 2: np.uint16, 4: np.uint32}[int(size)]
        try:
            raw = zlib.decompress(packed.numpy().tobytes())
        except zlib.error as exc:
            raise ValueError(f"the re-draw rounds of {name!r} are corrupt: {exc}") from exc
        rounds = np.frombuffer(raw, dtype=dtype)
        if rounds.size != math.prod(shape):
            raise ValueError(f"the re-draw rounds of {name!r} have {rounds.size} entries, expected {math.prod(shape)}")
        return rounds.astype(np.int64).reshape(shape)

    def restore_weight(self, name: str, weight: Tensor, fan_shape: tuple[int, ...], extra: dict[str, Tensor]) -> Tensor:
        return self._redrawn(name, weight, fan_shape, torch.from_numpy(self._rounds(name, tuple(weight.shape), extra)))

    def load_extra_state(self, layers: list[SupermaskLayer], tensors: dict[str, Tensor]) -> None:
        for layer in layers:
            rounds = self._rounds(layer.layer_name, tuple(layer.iterand_round.shape), tensors)
            layer.iterand_round.copy_(torch.from_numpy(rounds))
