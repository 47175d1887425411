"""Mask selection, the straight-through gradient and 1-bit packing.

k is always the fraction of weights KEPT. The kept count of a layer of n weights is
``kept_count(k, n) = max(1, round(k * n))`` (Python's round: halves go to the even integer).
The kept weights are those with the largest |score|; among equal |score| the one with the LOWER
flat index is kept. Selection is O(n) (``kthvalue`` quickselect, no full sort) and, on
accelerators, needs no device-to-host synchronisation. On the CPU a warm start from the previous
step's threshold narrows the selection to a thin band of candidates (see :func:`topk_mask`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def kept_count(k: float, n: int) -> int:
    """Number of weights kept out of ``n`` at fraction ``k``: max(1, round(k * n))."""
    return max(1, min(n, round(k * n)))


def _threshold_exact(a: Tensor, kept: int) -> Tensor:
    """The kept-th largest value of 1-D ``a`` (0-dim tensor), by quickselect."""
    return torch.kthvalue(a, a.numel() - kept + 1).values


def _threshold_warm(a: Tensor, kept: int, hint: float, width: float) -> Tensor | None:
    """The kept-th largest value, searched in the band [hint - width, hint + width].

    Returns None when the band does not contain it (the caller falls back to the exact search).
    CPU only: it reads counts back to Python, which would synchronise an accelerator.
    """
    lo, hi = hint - width, hint + width
    at_least_lo = a >= lo
    n_lo = int(torch.count_nonzero(at_least_lo))
    if n_lo < kept:
        return None
    band = a[at_least_lo & (a <= hi)]
    above = n_lo - band.numel()  # entries > hi
    if above >= kept:
        return None
    need = kept - above  # the need-th largest within the band
    return torch.kthvalue(band, band.numel() - need + 1).values


def topk_mask(a: Tensor, kept: int, hint: list[float] | None = None, sync_free: bool | None = None) -> Tensor:
    """Boolean mask of the ``kept`` largest entries of 1-D ``a``; ties kept by lower index.

    ``hint``, if given, is a 2-item list [previous threshold, previous change] that is read and
    updated: on the CPU it turns the O(n) quickselect into a few elementwise passes.
    ``sync_free`` (default: True off the CPU) uses only device-side operations, never reading a
    value back to the host.
    """
    if sync_free is None:
        sync_free = a.device.type != "cpu"
    n = a.numel()
    if kept >= n:
        return torch.ones_like(a, dtype=torch.bool)
    thr: Tensor | None = None
    if hint is not None and not sync_free and hint[0] == hint[0]:
        width = max(16.0 * hint[1], 1e-6 * abs(hint[0]), 1e-12)
        for scale in (1.0, 64.0):  # a narrow band first, then a wide one, then the full quickselect
            thr = _threshold_warm(a, kept, hint[0], width * scale)
            if thr is not None:
                break
    if thr is None:
        thr = _threshold_exact(a, kept)
    if not sync_free:
        mask = a >= thr
        extra = int(torch.count_nonzero(mask)) - kept  # > 0 only when entries tie with the threshold
        if extra > 0:
            ties = a == thr
            mask = (a > thr) | (ties & (torch.cumsum(ties, 0) <= int(ties.sum()) - extra))
        if hint is not None:
            value = float(thr)
            if hint[0] == hint[0]:
                hint[1] = abs(value - hint[0])
            hint[0] = value
    else:  # no host sync: always resolve ties with a cumulative count
        mask = a > thr
        ties = a == thr
        mask |= ties & (torch.cumsum(ties, 0) <= kept - mask.sum())
    return mask


def new_hint() -> list[float]:
    """An empty warm-start hint for :func:`topk_mask`."""
    return [float("nan"), 0.0]


class MaskedWeight(torch.autograd.Function):
    """``weight * mask`` forward; straight-through backward to the scores.

    edge-popup ranks by |score|, so (as in the paper) d|score| = d effective_weight * weight and,
    through the absolute value, d score = d effective_weight * weight * sign(score) (0 at a score of
    exactly 0, as autograd's d|x|/dx in the paper's code).
    bernoulli: d score = d effective_weight * weight * sigmoid'(score).
    The weight receives no gradient: it is frozen.
    """

    @staticmethod
    def forward(ctx, weight: Tensor, scores: Tensor, mask: Tensor, bernoulli: bool) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(weight, scores)
        ctx.bernoulli = bernoulli
        return weight * mask

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor, None, None]:  # type: ignore[override]
        weight, scores = ctx.saved_tensors
        grad_scores = grad * weight
        if ctx.bernoulli:
            p = torch.sigmoid(scores)
            grad_scores.mul_(p * (1.0 - p))
        else:
            grad_scores.mul_(scores.sign())
        return None, grad_scores, None, None


def pack_bits(mask: Tensor) -> Tensor:
    """A boolean tensor packed 8 per byte (uint8, flat, big-endian bit order as numpy)."""
    flat = mask.detach().to("cpu", torch.bool).reshape(-1).numpy()
    return torch.from_numpy(np.packbits(flat))


def unpack_bits(packed: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Inverse of :func:`pack_bits`."""
    n = int(np.prod(shape)) if shape else 1
    if packed.dtype != torch.uint8 or packed.numel() != (n + 7) // 8:
        raise ValueError(f"packed mask has {packed.numel()} bytes of {packed.dtype}, expected {(n + 7) // 8} uint8")
    bits = np.unpackbits(packed.numpy(), count=n).astype(bool)
    return torch.from_numpy(bits).reshape(shape)
