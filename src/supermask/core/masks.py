"""Mask selection, the straight-through gradient and 1-bit packing.

k is always the fraction of weights KEPT. The kept count of a layer of n weights is
``kept_count(k, n) = max(1, round(k * n))`` (Python's round: halves go to the even integer).
The kept weights are those with the largest |score|; among equal |score| the one with the LOWER
flat index is kept. On the CPU selection runs in NumPy, O(n) (introselect, and a warm start from the
previous step's threshold that narrows it to a thin band of candidates); on accelerators it needs no
device-to-host synchronisation: ``topk``, or a sort for layers under 2^20 weights, where a GPU sorts
faster than it runs topk (see :func:`topk_mask` and :func:`kth_largest`).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor
from torch.optim.optimizer import register_optimizer_step_post_hook

from supermask.errors import NonFiniteScoresError

R = TypeVar("R")


#: optimiser steps taken in this process (any ``torch.optim.Optimizer``): see :func:`version_key`
_OPTIMIZER_STEPS = [0]


def _count_optimizer_step(optimizer: Any, args: Any, kwargs: Any) -> None:
    _OPTIMIZER_STEPS[0] += 1


# PyTorch's fused optimisers (``AdamW(fused=True)``, the transformers Trainer's default ``adamw_torch_fused``)
# and others with kernels of their own update parameters in place WITHOUT bumping their version counter
# (measured: torch 2.13, AdamW / Adam / SGD fused on the CPU): a cache keyed on the version alone kept the
# first step's mask for the whole run. Every optimiser step is counted here, process-wide.
register_optimizer_step_post_hook(_count_optimizer_step)


def version_key(t: Tensor) -> object:
    """What identifies ``t``'s values for a cache: its in-place version counter and, for a tensor that
    an optimiser may train (``requires_grad``), the number of optimiser steps taken (fused optimisers
    change it without bumping its version). An inference tensor (made under ``torch.inference_mode``) has
    no version and can change in place unseen, so it gets a fresh key each call: a cache over it never
    hits (always right, never stale)."""
    if t.is_inference():
        return object()
    return (t._version, _OPTIMIZER_STEPS[0]) if t.requires_grad else t._version


def outside_inference_mode(fn: Callable[..., R]) -> Callable[..., R]:
    """Run ``fn(..., model, ...)`` (the model: its first ``nn.Module`` argument) outside ``torch.inference_mode`` when the model holds no inference tensor, so
    that what it creates (scores, regenerated weights, merged weights) are normal tensors and the model
    can still be trained. A model built under inference mode (its tensors can never be trained) is left
    in the caller's mode: changing it in place is allowed only there."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> R:
        model = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.nn.Module)), None)
        if torch.is_inference_mode_enabled() and model is not None:
            tensors = itertools.chain(model.parameters(), model.buffers())
            if not any(t.is_inference() for t in tensors):
                with torch.inference_mode(False):
                    return fn(*args, **kwargs)
        return fn(*args, **kwargs)

    return wrapper


def kept_count(k: float, n: int) -> int:
    """Number of weights kept out of ``n`` at fraction ``k``: max(1, round(k * n))."""
    return max(1, min(n, round(k * n)))


_NUMPY_FLOATS = (torch.float32, torch.float64)


def _band_mask(a: np.ndarray, kept: int, lo: float, hi: float) -> tuple[np.ndarray, float] | None:
    """The mask of the ``kept`` largest entries of ``a`` (ties: lower index) and the kept-th largest value,
    if that value lies in [lo, hi]; else None (the caller selects another way).

    Two passes over ``a`` (``a < lo``, ``a > hi``) and a few over bytes: the mask is the entries >= lo less
    the band's entries below the threshold, cleared by index, and the ties at the threshold all lie in the
    band. NaN fails both comparisons, so it counts as inside the band, where it is found (a few hundred
    values) and refused; a pass of ``a >= threshold`` and one more count are saved against selecting in the
    band and then comparing everything again (Conv4's 2.1M-score layer: 3.0-3.4 -> 2.5 ms, docs/BENCHMARKS.md).
    """
    mask = np.logical_not(a < lo)  # a >= lo, and NaN
    n_lo = int(np.count_nonzero(mask))
    if n_lo < kept:
        return None
    in_band = np.logical_not(a > hi)  # a <= hi, and NaN
    np.logical_and(in_band, mask, out=in_band)
    where = np.flatnonzero(in_band)  # increasing
    values = a[where]
    if np.isnan(values).any():
        raise NonFiniteScoresError("the scores contain NaN; no mask can be selected (was the learning rate too high?)")
    above = n_lo - where.size  # entries > hi (inf included)
    if above >= kept:
        return None
    need = kept - above  # the need-th largest within the band: 1 <= need <= band size
    thr = np.partition(values, values.size - need)[values.size - need]  # a scalar of a's dtype
    below = values < thr
    mask[where[below]] = False  # now exactly a >= thr
    ties = where[values == thr]  # every entry equal to thr is in the band, in increasing index order
    greater = where.size - int(np.count_nonzero(below)) - ties.size
    mask[ties[need - greater :]] = False  # ties keep the lower flat indices
    return mask, float(thr)


def _host_topk_mask(a: np.ndarray, kept: int, hint: list[float] | None) -> np.ndarray:
    """:func:`topk_mask` on the host, in NumPy (its comparisons, counts and selection are several
    times faster than the same PyTorch CPU operations on bool tensors, measured in docs/BENCHMARKS.md)."""
    found: tuple[np.ndarray, float] | None = None
    if hint is not None and hint[0] == hint[0]:
        width = max(16.0 * hint[1], 1e-6 * abs(hint[0]), 1e-12)
        for scale in (1.0, 64.0):  # a narrow band first, then a wide one, then the full quickselect
            found = _band_mask(a, kept, hint[0] - width * scale, hint[0] + width * scale)
            if found is not None:
                break
    if found is not None:
        mask, thr = found
    else:
        thr = float(np.partition(a, a.size - kept)[a.size - kept])  # O(n)
        mask = a >= thr
        count = int(np.count_nonzero(mask))
        if count < kept:  # only NaN compares false both ways
            raise NonFiniteScoresError(
                "the scores contain NaN; no mask can be selected (was the learning rate too high?)"
            )
        extra = count - kept  # > 0 only when entries tie with the threshold
        if extra > 0:
            ties = np.flatnonzero(a == thr)
            mask[ties[ties.size - extra :]] = False  # ties keep the lower flat indices
    if hint is not None:
        if hint[0] == hint[0]:
            hint[1] = abs(thr - hint[0])
        hint[0] = thr
    return mask


def topk_mask(a: Tensor, kept: int, hint: list[float] | None = None, sync_free: bool | None = None) -> Tensor:
    """Boolean mask of the ``kept`` largest entries of 1-D ``a``; ties kept by lower index.

    ``hint``, if given, is a 2-item list [previous threshold, previous change] that is read and
    updated: on the CPU it turns the O(n) quickselect into a few elementwise passes over a thin band
    around the previous threshold.
    ``sync_free`` (default: True off the CPU) uses only device-side operations, never reading a
    value back to the host; otherwise the selection runs on the host.
    """
    if sync_free is None:
        sync_free = a.device.type != "cpu"
    n = a.numel()
    if kept >= n:
        return torch.ones_like(a, dtype=torch.bool)
    if not sync_free:
        host = a.detach()
        if host.device.type != "cpu" or host.dtype not in _NUMPY_FLOATS:
            host = host.to("cpu", torch.float32)  # bf16/fp16 convert exactly, so the order is the same
        mask = torch.from_numpy(_host_topk_mask(host.contiguous().numpy(), kept, hint))
        return mask.to(a.device)
    # no host sync: the threshold from kth_largest (not kthvalue, which CUDA runs in one thread block per
    # slice: 49-79x slower on ResNet-18's and Conv4's largest layers on an H100), then always resolve
    # ties with a cumulative count
    return mask_above(a, kth_largest(a, kept), kept)


def mask_above(a: Tensor, thr: Tensor, kept: int) -> Tensor:
    """The ``kept`` entries of 1-D ``a`` at or above the kept-th largest value ``thr`` (no host sync):
    everything above it, and the lowest-index ties with it until ``kept`` are taken."""
    mask = a > thr
    ties = a == thr
    mask |= ties & (torch.cumsum(ties, 0, dtype=torch.int32) <= kept - mask.sum(dtype=torch.int32))
    return mask


# Below this many entries a full sort is cheaper than topk's multi-pass radix select on a GPU.
SORT_BELOW = 1 << 20


def kth_largest(a: Tensor, kept: int, sort_below: int | None = None) -> Tensor:
    """The ``kept``-th largest entry of 1-D ``a`` (a 0-d tensor; no host sync), 1 <= kept <= numel.

    Tensors smaller than ``sort_below`` sort; larger ones use ``topk``. Default: :data:`SORT_BELOW` on
    accelerators, 0 on the CPU (where a sort is slower than topk: 25 ms against 4 ms on 235k entries).
    """
    smallest = a.numel() - kept + 1  # the kept-th largest is the smallest-th smallest
    if sort_below is None:
        sort_below = 0 if a.device.type == "cpu" else SORT_BELOW
    if a.numel() < sort_below:
        return torch.sort(a).values[smallest - 1]
    if kept <= smallest:
        return torch.topk(a, kept, sorted=False).values.min()
    return torch.topk(a, smallest, largest=False, sorted=False).values.max()


def new_hint() -> list[float]:
    """An empty warm-start hint for :func:`topk_mask`."""
    return [float("nan"), 0.0]


#: the bits of 1.0 in the 16-bit float dtypes, as int16
_ONE_BITS = {torch.bfloat16: 0x3F80, torch.float16: 0x3C00}


def mask_in(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """``mask`` (bool, or a float mask's -1/0/1) ready to multiply a ``dtype`` weight, exactly: a bool mask
    on the CPU becomes a 16-bit float one through the bits of 1.0, since PyTorch's bool-to-bf16 conversion
    (and a bool * bf16 multiply's promotion) is slow there (1.0-1.4 ms over Conv4's 2.1M weights, against
    0.17 ms); a float mask is converted (exact for -1, 0, 1); a bool mask elsewhere is left to the multiply."""
    ones = _ONE_BITS.get(dtype)
    if mask.dtype == torch.bool:
        if ones is not None and mask.device.type == "cpu":
            return mask.view(torch.uint8).to(torch.int16).mul_(ones).view(dtype)
        return mask
    return mask.to(dtype)


class MaskedWeight(torch.autograd.Function):
    """``weight * mask`` forward; straight-through backward to the scores.

    edge-popup ranks by |score|, so (as in the paper) d|score| = d effective_weight * weight and,
    through the absolute value, d score = d effective_weight * weight * sign(score) (0 at a score of
    exactly 0, as autograd's d|x|/dx in the paper's code).
    bernoulli: d score = d effective_weight * weight * sigmoid'(score).
    The weight receives no gradient: it is frozen.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, weight: Tensor, scores: Tensor, mask: Tensor, bernoulli: bool, weight_low: Tensor | None = None
    ) -> Tensor:
        ctx.save_for_backward(weight, scores)
        ctx.bernoulli = bernoulli
        if weight_low is not None:
            # under autocast: ``weight`` already cast to its dtype (cached by the layer), masked there. The
            # same values as masking in fp32 and letting autocast cast (x * 0 and x * 1 are exact), one
            # weight-sized cast fewer each way; the gradient arrives in that dtype and is promoted below
            # exactly as autocast's cast would have.
            return weight_low * mask_in(mask, weight_low.dtype)
        if (
            weight.device.type == "cpu"
            and weight.dtype in _NUMPY_FLOATS
            and weight.is_contiguous()
            and not torch.compiler.is_compiling()
        ):
            # NumPy's float * bool is several times faster than PyTorch's on the CPU (same values)
            return torch.from_numpy(np.multiply(weight.detach().numpy(), mask.contiguous().numpy()))
        return weight * mask

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor, None, None, None]:  # type: ignore[override]
        weight, scores = ctx.saved_tensors
        if ctx.bernoulli:
            p = torch.sigmoid(scores)
            grad_scores = grad * weight
            grad_scores.mul_(p * (1.0 - p))
        else:  # built in one buffer: two weight-sized tensors alive (grad, result), not three
            grad_scores = scores.sign().mul_(weight).mul_(grad)
        return None, grad_scores, None, None, None


def host_empty(shape: tuple[int, ...]) -> Tensor:
    """An uninitialised float32 CPU tensor in memory NumPy allocates, for large tensors a load makes and keeps
    (rebuilt scores): NumPy asks the kernel for transparent huge pages from 4 MiB, so the first touch
    costs a fault per 2 MiB instead of per 4 KiB (fresh 4 KiB pages were most of a checkpoint load's time
    on some virtual machines: 25,000 faults and up to 0.5 s for ResNet-50's scores)."""
    return torch.from_numpy(np.empty(shape, dtype=np.float32))


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


class StraightThrough(torch.autograd.Function):
    """``weight * mask`` forward (``mask`` may hold -1, 0, 1); the plain straight-through backward
    d score = d effective_weight * weight, for masks that are a function of the score itself rather than
    of |score| (threshold masks: Piggyback, Zhao et al.; signed supermasks). The weight gets no gradient."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, weight: Tensor, scores: Tensor, mask: Tensor, weight_low: Tensor | None = None
    ) -> Tensor:
        ctx.save_for_backward(weight)
        if weight_low is not None:  # under autocast, as MaskedWeight: the cached cast masked (exact: -1/0/1)
            return weight_low * mask_in(mask, weight_low.dtype)
        return weight * mask

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor, None, None]:  # type: ignore[override]
        (weight,) = ctx.saved_tensors
        return None, grad * weight, None, None
