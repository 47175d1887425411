"""Counter-based random numbers that are a pure function of a key and an index.

Every random tensor in supermask (frozen weights, initial scores) comes from here, so it is the
same on every device, in every process, whatever torch's global RNG state, and across numpy and
torch versions: the generator uses only integer arithmetic and IEEE-754 ``+ - * / sqrt`` (which are
correctly rounded everywhere), never a platform ``log``/``cos``.

The stream for a key is SplitMix64 evaluated at counter ``i``: ``mix(key + (i + 1) * GOLDEN)``.
"""

from __future__ import annotations

import hashlib

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_LN2 = 0.6931471805599453
_SQRT_HALF = 0.7071067811865476


def derive_key(*parts: object) -> int:
    """A 64-bit key from any printable parts (seed, layer name, shape, purpose)."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little")


def random_uint64(key: int, n: int) -> np.ndarray:
    """``n`` pseudo-random 64-bit integers: SplitMix64 at counters 0..n-1 of stream ``key``."""
    z = (np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN) + np.uint64(key)
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


def random_sign(key: int, n: int) -> np.ndarray:
    """``n`` values of +1.0 or -1.0 (float64), from the top bit of each draw."""
    top = (random_uint64(key, n) >> np.uint64(63)).astype(np.float64)
    return 1.0 - 2.0 * top


def random_uniform(key: int, n: int) -> np.ndarray:
    """``n`` floats uniform on the open interval (0, 1), with 53 random bits each."""
    mantissa = (random_uint64(key, n) >> np.uint64(11)).astype(np.float64)
    return (mantissa + 0.5) * (2.0**-53)


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
    p = random_uniform(key, n)
    low = 0.02425
    q = p - 0.5
    r = q * q
    central = q * _poly(_A, r) / (_poly(_B, r) * r + 1.0)
    tail_p = np.minimum(p, 1.0 - p)
    s = np.sqrt(-2.0 * _portable_log(tail_p))
    tail = _poly(_C, s) / (_poly(_D, s) * s + 1.0)
    tail = np.where(p < 0.5, tail, -tail)
    return np.where(np.abs(q) <= 0.5 - low, central, tail)
