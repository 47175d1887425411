"""Checkpoints saved by supermask before the method plug-in redesign, with their outputs, so that a
change of the mask-method code can never change what an existing checkpoint computes.

What is pinned, and how exactly:
- ``expected.json``: the outputs on fixed inputs, computed when the checkpoints were saved. A convolution's
  last bits depend on the CPU's kernels (they differ between machines by about 1e-7 relative), so outputs
  are compared to float32 rounding, not bit for bit.
- ``expected_state.json``: SHA-256 of every tensor of the merged network (weights regenerated from the seed
  times the loaded masks, biases, BatchNorm statistics). Nothing in it depends on a CPU's arithmetic kernels,
  so it is compared bit for bit on every machine.

``python tests/pinned.py`` regenerates them (only on purpose: the point is that they stay fixed).
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

import supermask
from supermask.core import rng

PINNED = Path(__file__).parent / "fixtures" / "pinned"
METHODS = ("edge-popup", "edge-popup-global", "bernoulli", "dense")


def model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


def inputs() -> torch.Tensor:
    """Fixed inputs from the portable counter-based generator (independent of torch's RNG)."""
    values = rng.random_normal(rng.derive_key("pinned-inputs"), 4 * 3 * 8 * 8)
    return torch.from_numpy(values.astype(np.float32).reshape(4, 3, 8, 8))


def build(method: str) -> nn.Module:
    net = supermask.to_supermask(model(), supermask.SupermaskConfig(k=0.3, method=method, seed=11))
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.5, momentum=0.9)
    x = inputs()
    torch.manual_seed(0)
    net.train()
    for _ in range(3):
        opt.zero_grad()
        net(x).logsumexp(1).mean().backward()
        opt.step()
    return net.eval()


def state_digest(net: nn.Module) -> dict[str, str]:
    """SHA-256 of each tensor of the merged network (a supermask network's masks folded into its weights)."""
    return {
        name: hashlib.sha256(t.detach().contiguous().cpu().numpy().tobytes()).hexdigest()
        for name, t in merged_state(net).items()
    }


def merged_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """The state of ``merge`` applied to a copy of ``net`` (``merge`` works in place)."""
    return supermask.merge(copy.deepcopy(net)).state_dict()


def main() -> None:
    for method in METHODS:
        net = build(method)
        folder = PINNED / method
        supermask.save(net, folder)
        with torch.no_grad():
            out = supermask.load(folder, model()).eval()(inputs())
        (folder / "expected.json").write_text(json.dumps([float(v).hex() for v in out.reshape(-1).tolist()]))
        digest = state_digest(supermask.load(folder, model()))
        (folder / "expected_state.json").write_text(json.dumps(digest, indent=1, sort_keys=True) + "\n")
        print(folder, out.shape)


if __name__ == "__main__":
    main()
