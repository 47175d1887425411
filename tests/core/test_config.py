"""Tests of supermask.core.config."""

from __future__ import annotations

import pytest

import supermask
from supermask.core.config import SupermaskConfig
from supermask.core.methods import method_class
from tests.helpers.methods import METHODS


def test_invalid_config_values() -> None:
    for kwargs, text in [
        ({"k": 0}, "fraction of weights KEPT"),
        ({"k": 1.5}, "KEPT"),
        ({"method": "x"}, "edge-popup"),
        ({"weight_init": "x"}, "signed_constant"),
        ({"bias": "x"}, "zero"),
        ({"seed": -1}, "seed"),
    ]:
        with pytest.raises(supermask.SupermaskConfigError, match=text):
            SupermaskConfig(**kwargs)


def test_methods_without_k_ignore_it_in_the_experiment_identity() -> None:
    for method in METHODS:
        a = supermask.SupermaskConfig(method=method, k=0.3).experiment_dict()
        b = supermask.SupermaskConfig(method=method, k=0.5).experiment_dict()
        assert (a == b) is (not method_class(method).uses_k)
