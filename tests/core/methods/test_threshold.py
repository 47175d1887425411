"""Tests of supermask.core.methods.threshold."""

from __future__ import annotations

import pytest
from torch import nn

import supermask
from supermask.errors import SupermaskConfigError
from tests.helpers.methods import one_layer


def test_threshold_rule_and_piggyback_start() -> None:
    layer = one_layer("threshold", [[1.0, 2.0], [3.0, 4.0]], [[0.006, 0.005], [0.004, -1.0]])
    assert layer.mask().tolist() == [[True, False], [False, False]]  # score > 5e-3
    fresh = supermask.to_supermask(nn.Sequential(nn.Linear(3, 3)), supermask.SupermaskConfig(method="threshold"))
    assert bool((fresh[0].scores == 1e-2).all()) and bool(fresh[0].mask().all())  # every weight starts kept
    with pytest.raises(SupermaskConfigError, match="option threshold='x' of method 'threshold' must be a float"):
        supermask.SupermaskConfig(method="threshold", options={"threshold": "x"})
