"""Every public operation under ``torch.inference_mode()`` and ``torch.no_grad()`` (issue 25)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import supermask as sm
from supermask.core.methods import method_class, method_names


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


def _config(method: str, **extra: object) -> sm.SupermaskConfig:
    k = {"k": 0.5} if method_class(method).uses_k else {}
    return sm.SupermaskConfig(method=method, **k, **extra)  # type: ignore[arg-type]


MODES: list[Callable[[], contextlib.AbstractContextManager[object]]] = [torch.inference_mode, torch.no_grad]


X = torch.randn(2, 3, 8, 8)


@pytest.mark.parametrize("mode", MODES, ids=["inference_mode", "no_grad"])
@pytest.mark.parametrize("method", [m for m in method_names() if m != "dense"])
def test_every_operation_runs_in_the_mode_and_matches_grad_mode(method: str, mode: Callable, tmp_path: Path) -> None:
    reference = sm.to_supermask(_net(), _config(method)).eval()
    expected = reference(X).detach()
    with mode():
        model = sm.to_supermask(_net(), _config(method)).eval()
        first, second = model(X), model(X)  # the second forward reads the eval cache
        assert torch.equal(first, expected) and torch.equal(second, expected)
        if method_class(method).uses_k:
            sm.set_k(model, 0.3)
            model(X)
            sm.set_k(model, 0.5)
        sm.save(model, tmp_path / "ckpt")
        loaded = sm.load(tmp_path / "ckpt", _net()).eval()
        assert torch.equal(loaded(X), expected)
        sm.sparsity_report(model)
        merged = sm.merge(model)
        assert torch.equal(merged(X), expected)


@pytest.mark.parametrize("mode", MODES, ids=["inference_mode", "no_grad"])
def test_a_model_converted_or_loaded_in_the_mode_still_trains(mode: Callable, tmp_path: Path) -> None:
    net = _net()
    with mode():
        model = sm.to_supermask(net, sm.SupermaskConfig(k=0.5))
    model.train()
    model(X).sum().backward()
    assert model[0].scores.grad is not None
    sm.save(model, tmp_path / "ckpt")
    fresh = _net()  # a model built outside the mode (one built inside holds inference tensors: never trainable)
    with mode():
        loaded = sm.load(tmp_path / "ckpt", fresh)
    loaded.train()
    loaded(X).sum().backward()
    assert loaded[0].scores.grad is not None


def test_an_inference_tensor_is_never_served_stale_from_the_cache() -> None:
    """Inference tensors have no version counter: an in-place change under inference mode must still
    change the output (the cache over them never hits)."""
    with torch.inference_mode():
        model = sm.to_supermask(_net(), sm.SupermaskConfig(k=0.5)).eval()  # tensors made in the mode
        layer = model[3]
        layer.scores.data = torch.randn_like(layer.scores)
        before = model(X).clone()
        layer.scores.mul_(-1.0).add_(torch.randn_like(layer.scores))  # in place, unseen by any counter
        after = model(X)
        fresh = sm.to_supermask(_net(), sm.SupermaskConfig(k=0.5)).eval()
        fresh[3].scores.copy_(layer.scores)
        fresh[0].scores.copy_(model[0].scores)
        assert torch.equal(after, fresh(X))
        assert not torch.equal(before, after)


@pytest.mark.parametrize("mode", MODES, ids=["inference_mode", "no_grad"])
def test_task_masks_in_the_mode(mode: Callable) -> None:
    model = sm.to_supermask(_net(), sm.SupermaskConfig(k=0.5, tasks=3)).eval()
    expected = sm.infer_task(model, X)
    with mode():
        for task in range(3):
            sm.set_task(model, task)
            model(X)
        sm.set_task(model, 1)
        assert sm.infer_task(model, X) == expected  # its one gradient is taken even here
        assert sm.current_task(model) == 1
