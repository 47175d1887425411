"""Tests of supermask.core.methods.edge_popup."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import supermask
from supermask.core.masks import topk_mask


def _kernel_ops(fn: Any) -> int:
    """Operations dispatched by ``fn()`` that compute (views and aliases excluded: they launch nothing)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    count = [0]

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            if not any(r.alias_info is not None for r in func._schema.returns):
                count[0] += 1
            return func(*args, **(kwargs or {}))

    with Counter():
        fn()
    return count[0]


def test_global_topk_counts_and_guard() -> None:
    model = nn.Sequential(nn.Linear(50, 40), nn.ReLU(), nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 3))
    supermask.to_supermask(model, supermask.SupermaskConfig(k=0.2, method="edge-popup-global", score_init="uniform"))
    with torch.no_grad():
        model[4].scores.mul_(1e-6)  # this layer would be emptied by a plain global top-k
    layers = [model[0], model[2], model[4]]
    total = sum(m.base_layer.weight.numel() for m in layers)
    kept = [int(m.mask().sum()) for m in layers]
    assert sum(kept) == round(0.2 * total)
    assert kept[2] >= 1
    # everything else is the global rule: the largest |score| over all layers
    allscores = torch.cat([m.scores.detach().abs().reshape(-1) for m in layers[:2]])
    thr = torch.sort(allscores, descending=True).values[sum(kept[:2]) - 1]
    for m in layers[:2]:
        assert bool((m.scores.detach().abs()[m.mask()] >= thr).all())
    supermask.set_k(model, 0.5)
    assert sum(int(m.mask().sum()) for m in layers) == round(0.5 * total)
    with pytest.raises(supermask.SupermaskConfigError, match="fewer weights than there are layers"):
        supermask.set_k(model, 1 / total)


@pytest.mark.parametrize("method", ["edge-popup", "biprop", "iterand"])
def test_whole_model_selection_costs_a_constant_number_of_operations(method: str) -> None:
    """The accelerator path (forced on the CPU): one selection for all layers, the same number of tensor
    operations for 4 layers as for 20, and exactly the per-layer masks, ties included."""
    from supermask.core.methods.edge_popup import SegmentedTopK

    counts = []
    for depth in (4, 20):
        model = nn.Sequential(*[nn.Linear(9 + i, 10 + i) for i in range(depth)])
        supermask.to_supermask(model, supermask.SupermaskConfig(k=0.3, method=method))
        layers = [layer for _, layer in supermask.supermask_layers(model)]
        with torch.no_grad():
            for i, layer in enumerate(layers):  # integer scores: many ties
                layer.scores.copy_(torch.randint(-3, 4, layer.scores.shape, generator=torch.Generator().manual_seed(i)))
        group = SegmentedTopK(layers)
        group.compute()  # the cached pattern is made once
        counts.append(_kernel_ops(group.compute))
        masks = group.compute()
        for layer in layers:
            expected = topk_mask(layer.scores.detach().abs().reshape(-1), layer.kept(), sync_free=True)
            assert torch.equal(masks[id(layer)].reshape(-1), expected)
    assert counts[0] == counts[1] <= 10, counts
