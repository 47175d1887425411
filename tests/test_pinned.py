"""Checkpoints saved before the mask-method redesign load to the very same outputs, and the same
training steps still produce them (see tests/pinned.py)."""

from __future__ import annotations

import json

import pytest
import torch

import supermask
from pinned import METHODS, PINNED, build, inputs, model


def expected(method: str) -> torch.Tensor:
    values = [float.fromhex(v) for v in json.loads((PINNED / method / "expected.json").read_text())]
    return torch.tensor(values, dtype=torch.float32).reshape(4, 5)


@pytest.mark.parametrize("method", METHODS)
def test_pinned_checkpoint_loads_to_the_same_outputs(method: str) -> None:
    with torch.no_grad():
        out = supermask.load(PINNED / method, model()).eval()(inputs())
    assert torch.equal(out, expected(method))


@pytest.mark.parametrize("method", METHODS)
def test_the_same_training_steps_give_the_pinned_network(method: str) -> None:
    net = build(method)
    with torch.no_grad():
        assert torch.equal(net(inputs()), expected(method))
