"""Checkpoints saved before the mask-method redesign load to the very same network and outputs, and the
same training steps still produce them (see tests/pinned.py for what is pinned and how exactly)."""

from __future__ import annotations

import json

import pytest
import torch

import supermask
from tests.pinned import METHODS, PINNED, build, inputs, merged_state, model, state_digest

# A convolution's last bits depend on the CPU's kernels (measured: up to 7e-7 relative between two CPUs).
# Any change of a mask moves outputs by orders of magnitude more than this.
RTOL, ATOL = 1e-5, 1e-5


def expected(method: str) -> torch.Tensor:
    values = [float.fromhex(v) for v in json.loads((PINNED / method / "expected.json").read_text())]
    return torch.tensor(values, dtype=torch.float32).reshape(4, 5)


def expected_state(method: str) -> dict[str, str]:
    return dict(json.loads((PINNED / method / "expected_state.json").read_text()))


@pytest.mark.parametrize("method", METHODS)
def test_pinned_checkpoint_loads_to_the_same_network(method: str) -> None:
    net = supermask.load(PINNED / method, model()).eval()
    assert state_digest(net) == expected_state(method)  # bit for bit: no arithmetic kernel involved
    with torch.no_grad():
        torch.testing.assert_close(net(inputs()), expected(method), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("method", METHODS)
def test_the_same_training_steps_give_the_pinned_network(method: str) -> None:
    net = build(method)
    pinned = supermask.load(PINNED / method, model()).eval()
    trained, reference = merged_state(net), merged_state(pinned)
    # the same masks (a flipped bit moves a weight by its whole magnitude); learned tensors to rounding
    torch.testing.assert_close(trained, reference, rtol=RTOL, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(net(inputs()), expected(method), rtol=RTOL, atol=ATOL)


def test_a_flipped_mask_bit_is_far_outside_the_tolerance() -> None:
    """The tolerance above can fail: one mask bit changed moves the outputs well past it."""
    net = supermask.load(PINNED / "edge-popup", model()).eval()
    layer = next(m for m in net.modules() if isinstance(m, supermask.SupermaskLayer))
    with torch.no_grad():
        flat = layer.scores.view(-1)
        kept = flat.abs().argmax()
        flat[kept] = 0.0  # the largest score drops out of the top-k: one kept weight changes
        with pytest.raises(AssertionError):
            torch.testing.assert_close(net(inputs()), expected("edge-popup"), rtol=RTOL, atol=ATOL)
