"""Deterministic initialisation of frozen weights and of scores.

A layer's weights are a pure function of ``(seed, qualified name, shape, init options)``: see
:mod:`supermask.core.rng`. They are generated on the CPU in float64 and cast to the layer's dtype,
so every device gets bit-identical values.
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from supermask.core import rng

if TYPE_CHECKING:
    from supermask.core.config import SupermaskConfig


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a Linear/Conv weight, as torch.nn.init computes them."""
    if len(shape) < 2:
        raise ValueError(f"a weight needs at least 2 dimensions to have a fan, got shape {shape}")
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def gain(nonlinearity: str) -> float:
    """The standard gain of torch.nn.init.calculate_gain (gelu uses the relu gain); ``elus``: Koster et
    al.'s ELU-scaled gain for signed supermasks over ELU networks, He's sqrt(2) times sqrt(3)."""
    table = {
        "elus": math.sqrt(6.0),
        "relu": math.sqrt(2.0),
        "gelu": math.sqrt(2.0),
        "linear": 1.0,
        "sigmoid": 1.0,
        "tanh": 5.0 / 3.0,
        "leaky_relu": math.sqrt(2.0 / (1 + 0.01**2)),
    }
    return table[nonlinearity]


def weight_std(shape: tuple[int, ...], cfg: SupermaskConfig, k: float) -> float:
    """The target standard deviation: gain / sqrt(fan), with fan scaled by k when scale_fan.
    ``shape`` is in PyTorch's (out, in, *kernel) layout (see ``SupermaskLayer.fan_shape``)."""
    fan_in, fan_out = fans(shape)
    if cfg.weight_init == "xavier_normal" or cfg.fan_mode == "fan_avg":
        fan = (fan_in + fan_out) / 2.0
    else:
        fan = float(fan_in if cfg.fan_mode == "fan_in" else fan_out)
    if cfg.scale_fan:
        fan *= k  # k = fraction kept: the kept subnetwork's effective fan
    return gain(cfg.nonlinearity) / math.sqrt(fan)


def generate_weight(
    name: str,
    shape: tuple[int, ...],
    cfg: SupermaskConfig,
    k: float,
    fan_shape: tuple[int, ...] | None = None,
    salt: str = "",
) -> torch.Tensor:
    """The frozen random weight of layer ``name`` (float32, CPU). ``fan_shape``: the shape in
    (out, in, *kernel) layout when the stored ``shape`` is not (transformers' Conv1D stores (in, out)).
    ``salt``: another independent draw from the same distribution (IteRand's re-draws)."""
    n = math.prod(shape)
    parts: tuple[object, ...] = ("weight", cfg.seed, name, tuple(shape), cfg.weight_init)
    key = rng.derive_key(*parts, salt) if salt else rng.derive_key(*parts)
    std = weight_std(fan_shape or shape, cfg, k)
    if cfg.weight_init == "signed_constant":
        return torch.from_numpy(rng.signed_constant(key, n, std).reshape(shape))
    elif cfg.weight_init == "unsigned_constant":
        values = np.full(n, std)
    elif cfg.weight_init in ("kaiming_normal", "xavier_normal"):
        values = rng.uniform_float32(key, n, lambda u: rng.normal_quantile(u) * std)
    elif cfg.weight_init == "kaiming_uniform":
        bound = math.sqrt(3.0) * std
        values = rng.uniform_float32(key, n, lambda u: (u * 2.0 - 1.0) * bound)
    else:  # pragma: no cover - validated by the config
        raise ValueError(cfg.weight_init)
    return torch.from_numpy(values.astype(np.float32, copy=False).reshape(shape))


def generate_scores(
    name: str, shape: tuple[int, ...], cfg: SupermaskConfig, fan_shape: tuple[int, ...] | None = None
) -> torch.Tensor:
    """Initial scores of layer ``name`` (float32, CPU).

    kaiming_uniform: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), the paper's default (torch's
    ``kaiming_uniform_(a=sqrt(5))``). kaiming_normal: N(0, 2/fan_in). uniform: U(-v, v) with
    v = score_init_value. constant: every score = score_init_value (ties are broken by index).
    """
    n = math.prod(shape)
    key = rng.derive_key("scores", cfg.seed, name, tuple(shape), cfg.score_init)
    fan_in, _ = fans(fan_shape or shape)
    if cfg.score_init == "kaiming_uniform":
        root = math.sqrt(fan_in)
        values = rng.uniform_float32(key, n, lambda u: (u * 2.0 - 1.0) / root)
    elif cfg.score_init == "kaiming_normal":
        scale = math.sqrt(2.0 / fan_in)
        values = rng.uniform_float32(key, n, lambda u: rng.normal_quantile(u) * scale)
    elif cfg.score_init == "uniform":
        value = cfg.score_init_value
        values = rng.uniform_float32(key, n, lambda u: (u * 2.0 - 1.0) * value)
    elif cfg.score_init == "constant":
        values = np.full(n, cfg.score_init_value)
    else:  # pragma: no cover - validated by the config
        raise ValueError(cfg.score_init)
    return torch.from_numpy(values.astype(np.float32, copy=False).reshape(shape))


def generate_uniform(name: str, shape: tuple[int, ...], cfg: SupermaskConfig, draw: int = 0) -> torch.Tensor:
    """The fixed uniforms (float64, CPU) of layer ``name``'s bernoulli eval draw number ``draw`` (0: the
    draw runs evaluate and checkpoints store; others: independent draws, see :func:`supermask.set_eval_draw`)."""
    parts: tuple[object, ...] = ("bernoulli-eval", cfg.seed, name, tuple(shape))
    key = rng.derive_key(*parts) if draw == 0 else rng.derive_key(*parts, "draw", draw)
    return torch.from_numpy(rng.random_uniform(key, math.prod(shape)).reshape(shape))


def checksum(tensor: torch.Tensor) -> str:
    """sha256 (hex, first 16 chars) of a tensor's float32 little-endian bytes."""
    data = tensor.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4", copy=False)
    return hashlib.sha256(data.reshape(-1).data.cast("B")).hexdigest()[:16]  # no copy (hashlib frees the GIL)
