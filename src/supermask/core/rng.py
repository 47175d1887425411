"""Counter-based random numbers that are a pure function of a key and an index.

Every random tensor in supermask (frozen weights, initial scores) comes from here, so it is the
same on every device, in every process, whatever torch's global RNG state, and across numpy and
torch versions: the generator uses only integer arithmetic and IEEE-754 ``+ - * / sqrt`` (which are
correctly rounded everywhere), never a platform ``log``/``cos``.

The stream for a key is SplitMix64 evaluated at counter ``i``: ``mix(key + (i + 1) * GOLDEN)``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_LN2 = 0.6931471805599453
_SQRT_HALF = 0.7071067811865476


def derive_key(*parts: object) -> int:
    """A 64-bit key from any printable parts (seed, layer name, shape, purpose)."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little")


_CHUNK = 1 << 16  # elements per block: 512 KiB of uint64 and its temporary stay in a core's L2 cache
_PARALLEL_FROM = 1 << 20  # below this, one thread (a pool's start-up costs more than it saves)
# (i + 1) * GOLDEN for i in 0.._CHUNK-1, wrapping mod 2**64 (read only): a block's state is this plus one
# constant, key + start * GOLDEN, since (start + i + 1) * GOLDEN + key = (i + 1) * GOLDEN + (start * GOLDEN + key)
_STEPS = np.arange(1, _CHUNK + 1, dtype=np.uint64) * _GOLDEN
_STEPS.flags.writeable = False
_TOP_BIT32 = np.uint32(0x80000000)


def _mix_block(key: int, start: int, out: np.ndarray, tmp: np.ndarray, final: bool = True) -> None:
    """SplitMix64 at counters start..start+len(out)-1, written into ``out`` (``tmp``: scratch, same size).
    ``final=False`` leaves out the last xor-shift (z ^ z >> 31), which never changes the top bit."""
    np.add(_STEPS[: out.size], np.uint64((key + start * int(_GOLDEN)) % (1 << 64)), out=out)
    for shift, mult in ((30, _M1), (27, _M2)):
        np.right_shift(out, np.uint64(shift), out=tmp)
        np.bitwise_xor(out, tmp, out=out)
        np.multiply(out, mult, out=out)
    if final:
        np.right_shift(out, np.uint64(31), out=tmp)
        np.bitwise_xor(out, tmp, out=out)


def _blocks(n: int, fill: Any) -> None:
    """Call ``fill(start, stop, scratch_u64, scratch_u64)`` over ``range(n)`` in cache-sized blocks, on up to
    ``torch.get_num_threads()`` threads (NumPy releases the GIL in its loops)."""
    threads = 1 if n < _PARALLEL_FROM else max(1, min(torch.get_num_threads(), os.cpu_count() or 1, 16))

    def run(first: int, last: int) -> None:
        a, b = np.empty(_CHUNK, np.uint64), np.empty(_CHUNK, np.uint64)
        for start in range(first, last, _CHUNK):
            stop = min(start + _CHUNK, last)
            fill(start, stop, a[: stop - start], b[: stop - start])

    if threads == 1:
        run(0, n)
        return
    per = -(-n // threads // _CHUNK) * _CHUNK  # whole blocks per thread
    with ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(run, lo, min(lo + per, n)) for lo in range(0, n, per)]:
            f.result()


def random_uint64(key: int, n: int) -> np.ndarray:
    """``n`` pseudo-random 64-bit integers: SplitMix64 at counters 0..n-1 of stream ``key``."""
    z = np.empty(n, np.uint64)

    def fill(start: int, stop: int, _: np.ndarray, tmp: np.ndarray) -> None:
        _mix_block(key, start, z[start:stop], tmp)

    _blocks(n, fill)
    return z


def random_sign(key: int, n: int) -> np.ndarray:
    """``n`` values of +1.0 or -1.0 (float64), from the top bit of each draw."""
    top = (random_uint64(key, n) >> np.uint64(63)).astype(np.float64)
    return 1.0 - 2.0 * top


def signed_constant(key: int, n: int, value: float) -> np.ndarray:
    """``random_sign(key, n) * value`` rounded to float32, made without the 64-bit intermediates (one
    pass per cache-sized block; bit-identical, as rounding to float32 is symmetric in the sign)."""
    out = np.empty(n, np.float32)
    bits = out.view(np.uint32)
    value_bits = np.array(value, np.float32).view(np.uint32)  # value rounded to float32, as bits
    high = 1 if np.little_endian else 0  # the 32-bit half of each uint64 that holds its top bit

    def fill(start: int, stop: int, z: np.ndarray, tmp: np.ndarray) -> None:
        _mix_block(key, start, z, tmp, final=False)  # the top bit is all that is read
        block = bits[start:stop]
        np.bitwise_and(z.view(np.uint32)[high::2], _TOP_BIT32, out=block)  # the draw's top bit: 1 = negative
        np.bitwise_xor(block, value_bits, out=block)  # the value with its sign flipped where the bit is set

    _blocks(n, fill)
    return out


def random_uniform(key: int, n: int) -> np.ndarray:
    """``n`` floats uniform on the open interval (0, 1), with 53 random bits each."""
    mantissa = (random_uint64(key, n) >> np.uint64(11)).astype(np.float64)
    return (mantissa + 0.5) * (2.0**-53)


def uniform_float32(key: int, n: int, transform: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``transform(random_uniform(key, n)).astype(float32)`` made block by block (cache-sized, threaded):
    the same elementwise float64 operations on the same draws, so bit-identical, without whole-layer
    64-bit arrays. ``transform`` must be elementwise (e.g. ``lambda u: (u * 2.0 - 1.0) * bound``)."""
    out = np.empty(n, np.float32)

    def fill(start: int, stop: int, z: np.ndarray, tmp: np.ndarray) -> None:
        _mix_block(key, start, z, tmp)
        np.right_shift(z, np.uint64(11), out=z)
        u = z.astype(np.float64)
        u += 0.5
        u *= 2.0**-53
        out[start:stop] = transform(u)

    _blocks(n, fill)
    return out


def _portable_log(x: np.ndarray) -> np.ndarray:
    """Natural log of positive floats using only exactly-rounded operations."""
    mantissa, exponent = np.frexp(x)  # x = m * 2**e, m in [0.5, 1)
    small = mantissa < _SQRT_HALF
    mantissa = np.where(small, mantissa * 2.0, mantissa)
    exponent = np.where(small, exponent - 1, exponent).astype(np.float64)
    t = (mantissa - 1.0) / (mantissa + 1.0)  # |t| <= 0.1716
    t2 = t * t
    series = np.zeros_like(t)
    for odd in range(25, 0, -2):  # atanh series, error < 1e-17 for |t| <= 0.1716
        series = series * t2 + 1.0 / odd
    return exponent * _LN2 + 2.0 * t * series


# Acklam's rational approximation of the normal quantile (relative error < 1.2e-9).
_A = (
    -3.969683028665376e01,
    2.209460984245205e02,
    -2.759285104469687e02,
    1.383577518672690e02,
    -3.066479806614716e01,
    2.506628277459239e00,
)
_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01, -1.328068155288572e01)
_C = (
    -7.784894002430293e-03,
    -3.223964580411365e-01,
    -2.400758277161838e00,
    -2.549732539343734e00,
    4.374664141464968e00,
    2.938163982698783e00,
)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)


def _poly(coeffs: tuple[float, ...], x: np.ndarray) -> np.ndarray:
    out = np.full_like(x, coeffs[0])
    for c in coeffs[1:]:
        out = out * x + c
    return out


def random_normal(key: int, n: int) -> np.ndarray:
    """``n`` standard normal floats (float64) by inverse-CDF of :func:`random_uniform`."""
    return normal_quantile(random_uniform(key, n))


def normal_quantile(p: np.ndarray) -> np.ndarray:
    """The standard normal quantile of each p in (0, 1), elementwise (Acklam's approximation)."""
    low = 0.02425
    q = p - 0.5
    r = q * q
    central = q * _poly(_A, r) / (_poly(_B, r) * r + 1.0)
    tail_p = np.minimum(p, 1.0 - p)
    s = np.sqrt(-2.0 * _portable_log(tail_p))
    tail = _poly(_C, s) / (_poly(_D, s) * s + 1.0)
    tail = np.where(p < 0.5, tail, -tail)
    return np.where(np.abs(q) <= 0.5 - low, central, tail)
