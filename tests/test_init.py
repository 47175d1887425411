"""Deterministic, portable weights and the init rules."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import supermask
from supermask.core import rng
from supermask.core.config import SupermaskConfig
from supermask.core.init import checksum, generate_scores, generate_weight


def test_generator_is_pinned() -> None:
    # Golden values: SplitMix64 with key 0 starts with these (its published test vector).
    assert [int(v) for v in rng.random_uint64(0, 3)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def test_normal_statistics() -> None:
    x = rng.random_normal(rng.derive_key("t"), 400_000)
    assert abs(x.mean()) < 0.01 and abs(x.std() - 1) < 0.01
    assert abs((np.abs(x) > 2).mean() - 0.0455) < 0.002


def _checksums(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_weights_identical_across_processes_and_global_rng() -> None:
    code = (
        "import torch, supermask\n"
        "from supermask.core.init import checksum\n"
        "torch.manual_seed({s}); torch.rand(100)\n"
        "m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8, 4))\n"
        "supermask.to_supermask(m, supermask.SupermaskConfig(seed=7, weight_init='kaiming_normal'))\n"
        "print([checksum(l.base_layer.weight) + checksum(l.scores) for _, l in supermask.supermask_layers(m)])\n"
    )
    assert _checksums(code.format(s=1)) == _checksums(code.format(s=12345))


def test_weights_do_not_depend_on_conversion_order_or_device_dtype_path() -> None:
    cfg = SupermaskConfig(seed=3)
    a = nn.Sequential(nn.Linear(5, 6), nn.Linear(6, 2))
    b = nn.Sequential(nn.Linear(5, 6), nn.Linear(6, 2))
    supermask.to_supermask(a, cfg)
    supermask.to_supermask(b, SupermaskConfig(seed=3, target_modules=["1"]))  # only the second layer
    assert torch.equal(a[1].base_layer.weight, b[1].base_layer.weight)
    assert torch.equal(a[1].scores, b[1].scores)
    other = generate_weight("1", (2, 6), SupermaskConfig(seed=4), 0.5)
    assert not torch.equal(other, a[1].base_layer.weight)


@pytest.mark.parametrize("fan_mode", ["fan_in", "fan_out"])
def test_signed_constant(fan_mode: str) -> None:
    shape = (16, 8, 3, 3)
    w = generate_weight("c", shape, SupermaskConfig(fan_mode=fan_mode), 0.5)
    fan = 8 * 9 if fan_mode == "fan_in" else 16 * 9
    expected = math.sqrt(2.0) / math.sqrt(fan)
    assert torch.allclose(w.abs(), torch.full(shape, expected))
    assert 0.35 < (w > 0).float().mean() < 0.65


@pytest.mark.parametrize("k", [0.1, 0.3, 0.5, 0.9])
def test_scale_fan_is_right_for_every_k(k: float) -> None:
    w = generate_weight("l", (64, 100), SupermaskConfig(scale_fan=True, k=k, weight_init="unsigned_constant"), k)
    assert torch.allclose(w, torch.full_like(w, math.sqrt(2.0) / math.sqrt(100 * k)))


@pytest.mark.parametrize("init", ["kaiming_normal", "kaiming_uniform", "xavier_normal"])
def test_random_inits_have_target_std(init: str) -> None:
    w = generate_weight("l", (300, 400), SupermaskConfig(weight_init=init, nonlinearity="relu"), 0.5)
    fan = 400 if init != "xavier_normal" else 350
    assert abs(float(w.std()) - math.sqrt(2.0 / fan)) / math.sqrt(2.0 / fan) < 0.02


def test_score_inits() -> None:
    s = generate_scores("l", (50, 100), SupermaskConfig(score_init="kaiming_uniform"))
    assert float(s.abs().max()) <= 1 / math.sqrt(100)
    c = generate_scores("l", (5, 4), SupermaskConfig(score_init="constant", score_init_value=0.25))
    assert torch.equal(c, torch.full((5, 4), 0.25))


def test_checksum_detects_change() -> None:
    w = generate_weight("l", (4, 4), SupermaskConfig(), 0.5)
    w2 = w.clone()
    w2[0, 0] = -w2[0, 0]
    assert checksum(w) != checksum(w2) and checksum(w) == checksum(w.clone())


def _splitmix64_reference(key: int, n: int) -> list[int]:
    """SplitMix64 at counters 0..n-1, in plain Python integers (the definition in supermask.core.rng)."""
    out, mask = [], (1 << 64) - 1
    for i in range(n):
        z = (key + (i + 1) * 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        out.append(z ^ (z >> 31))
    return out


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
    import math

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
