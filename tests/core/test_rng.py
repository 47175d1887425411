"""Tests of supermask.core.rng."""

from __future__ import annotations

import math

import numpy as np

from supermask.core import rng


def _splitmix64_reference(key: int, n: int) -> list[int]:
    """SplitMix64 at counters 0..n-1, in plain Python integers (the definition in supermask.core.rng)."""
    out, mask = [], (1 << 64) - 1
    for i in range(n):
        z = (key + (i + 1) * 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        out.append(z ^ (z >> 31))
    return out


def test_generator_is_pinned() -> None:
    # Golden values: SplitMix64 with key 0 starts with these (its published test vector).
    assert [int(v) for v in rng.random_uint64(0, 3)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def test_normal_statistics() -> None:
    x = rng.random_normal(rng.derive_key("t"), 400_000)
    assert abs(x.mean()) < 0.01 and abs(x.std() - 1) < 0.01
    assert abs((np.abs(x) > 2).mean() - 0.0455) < 0.002


def test_the_blocked_threaded_generator_is_the_plain_definition() -> None:
    import numpy as np

    from supermask.core import rng

    for key in (0, 2**64 - 1, 123456789):
        assert rng.random_uint64(key, 70).tolist() == _splitmix64_reference(key, 70)
    # around the block and thread boundaries: the whole-array formula of the first release
    g, m1, m2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
    for n in (0, 1, rng._CHUNK - 1, rng._CHUNK, rng._CHUNK + 1, rng._PARALLEL_FROM + 3 * rng._CHUNK + 7):
        key = 987654321
        z = np.arange(1, n + 1, dtype=np.uint64) * g + np.uint64(key)
        z ^= z >> np.uint64(30)
        z *= m1
        z ^= z >> np.uint64(27)
        z *= m2
        z ^= z >> np.uint64(31)
        assert np.array_equal(rng.random_uint64(key, n), z), n
        for value in (0.0123, -0.5):
            expected = ((1.0 - 2.0 * (z >> np.uint64(63)).astype(np.float64)) * value).astype(np.float32)
            assert rng.signed_constant(key, n, value).tobytes() == expected.tobytes(), (n, value)


def test_blockwise_float32_draws_are_the_whole_array_formulas() -> None:

    import numpy as np

    from supermask.core import rng

    transforms = [
        lambda u: (u * 2.0 - 1.0) * 0.37,  # kaiming_uniform weights
        lambda u: (u * 2.0 - 1.0) / math.sqrt(27),  # kaiming_uniform scores (a division, as before)
        lambda u: rng.normal_quantile(u) * 0.05,  # normal weights and scores
    ]
    for n in (0, 1, rng._CHUNK + 1, rng._PARALLEL_FROM + rng._CHUNK + 5):
        u = rng.random_uniform(11, n)
        for f in transforms:
            assert rng.uniform_float32(11, n, f).tobytes() == f(u).astype(np.float32).tobytes(), n
