"""Tests of supermask.core.registry."""

from __future__ import annotations

import pytest

from supermask.core import registry
from supermask.core.methods import MaskMethod, method_class, method_names, register_method
from supermask.errors import SupermaskConfigError
from tests.helpers.methods import METHODS, PositiveTopK


def test_the_user_method_is_registered() -> None:
    assert "positive-top-k" in METHODS and method_class("positive-top-k") is PositiveTopK
    with pytest.raises(SupermaskConfigError, match="already registered"):

        @register_method
        class Again(MaskMethod):
            name = "edge-popup"


def test_a_method_class_that_cannot_work_is_refused_when_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # nothing registered here outlives the test
    with pytest.raises(SupermaskConfigError, match="must implement select"):

        @register_method
        class NoSelect(MaskMethod):
            name = "no-select"

    for bad in ("two words", "a,b", "", "-lead"):
        with pytest.raises(SupermaskConfigError, match="name"):
            register_method(type("Bad", (PositiveTopK,), {"name": bad}))
    assert "no-select" not in method_names()
