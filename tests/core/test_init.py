"""Deterministic, portable weights and the init rules."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torch import nn

import supermask
import supermask as sm
from supermask.core.config import SupermaskConfig
from supermask.core.init import checksum, generate_scores, generate_weight


def _checksums(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


@pytest.mark.slow
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


def test_elus_weights_are_sqrt3_times_he() -> None:
    model = sm.to_supermask(
        nn.Sequential(nn.Linear(784, 300, bias=False)),
        sm.SupermaskConfig(method="signed-supermask", weight_init="signed_constant", nonlinearity="elus"),
    )
    w = model[0].base_layer.weight
    assert torch.allclose(w.abs(), torch.full_like(w, math.sqrt(3) * math.sqrt(2 / 784)))


def test_glorot_signed_constant_is_fan_avg_with_linear_gain() -> None:
    cfg = sm.SupermaskConfig(
        method="bernoulli", weight_init="signed_constant", nonlinearity="linear", fan_mode="fan_avg"
    )
    model = sm.to_supermask(nn.Sequential(nn.Linear(784, 300, bias=False)), cfg)
    w = model[0].base_layer.weight
    assert torch.allclose(w.abs(), torch.full_like(w, math.sqrt(2 / (784 + 300))))
