"""Selection rule, straight-through gradients, global top-k and bit packing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import supermask
from supermask.core import masks
from supermask.core.masks import MaskedWeight, kept_count, kth_largest, new_hint, pack_bits, topk_mask, unpack_bits
from tests.helpers.masks import surrogate_grads


def reference_mask(a: torch.Tensor, kept: int) -> torch.Tensor:
    """The documented rule by brute force: largest values first, ties to the lower index."""
    order = sorted(range(a.numel()), key=lambda i: (-float(a[i]), i))
    mask = torch.zeros(a.numel(), dtype=torch.bool)
    mask[order[:kept]] = True
    return mask


@pytest.mark.parametrize("n", [1, 2, 7, 100, 1001])
@pytest.mark.parametrize("k", [0.001, 0.05, 0.1, 0.3, 0.333, 0.5, 0.7, 0.9, 0.999, 1.0])
def test_kept_count_rule(n: int, k: float) -> None:
    assert kept_count(k, n) == max(1, round(k * n))


@pytest.mark.parametrize("sync_free", [False, True])  # True: the accelerator path, run here on the CPU
def test_topk_matches_reference_with_ties(sync_free: bool) -> None:
    g = torch.Generator().manual_seed(0)
    for n in (1, 5, 64, 333):
        a = torch.randint(0, 4, (n,), generator=g).float()  # many ties
        for kept in {1, n // 3 or 1, n // 2 or 1, n}:
            assert torch.equal(topk_mask(a, kept, sync_free=sync_free), reference_mask(a, kept))
        b = torch.rand(n, generator=g)
        assert torch.equal(topk_mask(b, n // 2 or 1, sync_free=sync_free), reference_mask(b, n // 2 or 1))


@pytest.mark.parametrize("sort_below", [0, 10**9])  # 0: topk of the smaller side; 10**9: a full sort
def test_kth_largest_both_ways(sort_below: int, monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(2)
    for n in (1, 2, 9, 500):
        a = torch.randint(0, 7, (n,), generator=g).float()
        for kept in sorted({min(2, n), 1, n // 3 or 1, n // 2 or 1, n - 1 or 1, n}):
            expected = sorted(a.tolist(), reverse=True)[kept - 1]
            assert float(kth_largest(a, kept, sort_below)) == expected
            monkeypatch.setattr(masks, "SORT_BELOW", sort_below)  # what topk_mask uses
            assert torch.equal(topk_mask(a, kept, sync_free=True), reference_mask(a, kept))


def test_warm_start_equals_cold_selection() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.rand(5000, generator=g)
    hint = new_hint()
    for step in range(30):
        kept = 1234 if step < 15 else 4000
        assert torch.equal(topk_mask(a, kept, hint), topk_mask(a, kept))
        a = (a + 0.001 * (step % 7) * torch.randn(5000, generator=g)).abs()
        if step == 20:
            a[:100] = a[100]  # a block of ties
    assert hint[0] == hint[0]  # the hint was used and updated


def test_warm_start_resolves_ties_at_the_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    # integer-valued scores: the threshold always falls in a block of ties, and the warm-started band
    # must keep exactly the lowest-index ties, as the cold selection and the reference do
    g = torch.Generator().manual_seed(3)
    a = torch.randint(0, 50, (20000,), generator=g).float()
    hint = new_hint()
    band_hits: list[object] = []
    band_mask = masks._band_mask
    monkeypatch.setattr(masks, "_band_mask", lambda *args: band_hits.append(band_mask(*args)) or band_hits[-1])
    for step in range(12):
        kept = [10000, 9999, 123, 19999][step % 4]
        warm = topk_mask(a, kept, hint)
        assert torch.equal(warm, reference_mask(a, kept))
        assert int(warm.sum()) == kept
        if step % 2:
            a = a + torch.randint(-1, 2, (20000,), generator=g).float()
    assert hint[0] == hint[0] and hint[1] >= 0
    assert sum(hit is not None for hit in band_hits) >= 4  # the warm path really ran


def test_constant_scores_keep_lowest_indices() -> None:
    layer = nn.Sequential(nn.Linear(10, 10))
    supermask.to_supermask(layer, supermask.SupermaskConfig(k=0.25, score_init="constant"))
    mask = layer[0].mask().reshape(-1)
    assert mask[:25].all() and not mask[25:].any()


@pytest.mark.parametrize(
    "module",
    [nn.Linear(17, 9), nn.Conv1d(4, 6, 3), nn.Conv2d(3, 8, 3), nn.Conv2d(4, 8, 3, groups=2), nn.Conv3d(2, 3, 2)],
)
@pytest.mark.parametrize("k", [0.01, 0.1, 0.3, 0.5, 0.77, 1.0])
def test_exact_kept_counts_per_layer(module: nn.Module, k: float) -> None:
    model = nn.Sequential(module)
    supermask.to_supermask(model, supermask.SupermaskConfig(k=k))
    n = module.weight.numel()
    assert int(model[0].mask().sum()) == max(1, round(k * n))
    rep = supermask.sparsity_report(model)
    assert rep["layers"][0]["kept"] == max(1, round(k * n)) and rep["layers"][0]["total"] == n


def test_straight_through_gradient_edge_popup() -> None:
    g_scores, g_eff, weight, scores = surrogate_grads("edge-popup")
    # d|score| = d effective weight x weight (the paper); the sign comes from |.|
    assert torch.allclose(g_scores * scores.sign(), g_eff * weight, atol=1e-6)
    assert torch.count_nonzero(g_scores) == g_scores.numel()  # dropped weights get gradients too


def test_frozen_weight_gets_no_gradient() -> None:
    model = nn.Sequential(nn.Linear(6, 5))
    supermask.to_supermask(model, supermask.SupermaskConfig())
    model(torch.randn(2, 6)).sum().backward()
    assert model[0].base_layer.weight.grad is None
    assert not model[0].base_layer.weight.requires_grad
    assert model[0].base_layer.weight not in list(model.buffers())


def test_pack_roundtrip() -> None:
    for n in (1, 7, 8, 9, 1000):
        m = torch.rand(n) > 0.5
        packed = pack_bits(m)
        assert packed.dtype == torch.uint8 and packed.numel() == (n + 7) // 8
        assert torch.equal(unpack_bits(packed, (n,)), m)
    with pytest.raises(ValueError, match="expected"):
        unpack_bits(torch.zeros(3, dtype=torch.uint8), (100,))


def test_host_selection_handles_half_precision_and_rejects_nan() -> None:
    g = torch.Generator().manual_seed(5)
    a = torch.rand(999, generator=g).to(torch.bfloat16)  # many ties after rounding to bf16
    for kept in (1, 100, 500, 998):
        assert torch.equal(topk_mask(a, kept), reference_mask(a.float(), kept))
        assert torch.equal(topk_mask(a, kept), topk_mask(a, kept, sync_free=True))
    b = torch.rand(100, generator=g)
    b[7] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        topk_mask(b, 50)
    # warm-started too: the band's comparisons skip NaN, which must not turn into a silent full mask
    c, hint = torch.rand(1000, generator=g), new_hint()
    topk_mask(c, 500, hint)
    c[3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        topk_mask(c, 500, hint)
    # and when ties at the threshold could make up the count that NaN takes away
    d, hint = torch.randint(0, 10, (1000,), generator=g).float(), new_hint()
    topk_mask(d, 500, hint)
    d[int(torch.nonzero(d > hint[0])[0])] = float("nan")  # one entry above the threshold; the rest unchanged
    with pytest.raises(ValueError, match="NaN"):
        topk_mask(d, 500, hint)


def test_warm_selection_follows_the_rule_wherever_the_threshold_moves_and_refuses_nan_anywhere() -> None:
    # scores drifting a little (the band hits), jumping (it misses: the cold selection), with ties, inf,
    # and a NaN placed above, inside or below the previous threshold's band
    g = torch.Generator().manual_seed(11)
    for trial in range(40):
        n = int(torch.randint(2, 3000, (1,), generator=g))
        a = torch.rand(n, generator=g) if trial % 3 else torch.randint(0, 20, (n,), generator=g).float()
        hint = new_hint()
        for step in range(6):
            kept = int(torch.randint(1, n + 1, (1,), generator=g))
            assert torch.equal(topk_mask(a, kept, hint), reference_mask(a, kept)), (trial, step, kept)
            noise = [1e-4, 1e-2, 0.5][step % 3] * torch.randn(n, generator=g)
            a = (a + (noise * 100).round() if trial % 3 == 0 else a + noise).abs()  # integers: ties stay
            if step == 3:
                a[int(torch.randint(0, n, (1,), generator=g))] = float("inf")
        position = [0.0, 0.5, 0.999][trial % 3]  # below, at, above the last threshold, by rank
        bad = a.clone()
        bad[int(torch.argsort(a)[int(position * (n - 1))])] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            topk_mask(bad, max(1, n // 2), hint)


@pytest.mark.parametrize("layout", ["float32", "float64", "bfloat16", "channels_last"])
def test_masked_weight_is_weight_times_mask_in_every_layout(layout: str) -> None:
    g = torch.Generator().manual_seed(6)
    w = torch.randn(8, 4, 3, 3, generator=g)
    s = torch.randn(8, 4, 3, 3, generator=g)
    if layout == "channels_last":
        w, s = w.contiguous(memory_format=torch.channels_last), s.contiguous(memory_format=torch.channels_last)
    elif layout != "float32":
        w, s = w.to(getattr(torch, layout)), s.to(getattr(torch, layout))
    s.requires_grad_(True)
    mask = topk_mask(s.detach().abs().reshape(-1), 100).reshape(s.shape)
    out = MaskedWeight.apply(w, s, mask, False)
    assert out.dtype == w.dtype and torch.equal(out, w * mask)
    out.backward(torch.ones_like(out))
    assert s.grad is not None and torch.equal(s.grad, w * s.detach().sign())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed"])
def test_the_masked_autocast_weight_has_the_bits_of_weight_times_mask(dtype: torch.dtype, layout: str) -> None:
    # under autocast the cached low-precision weight is masked through the mask's bits: the same bits as
    # the plain product, the sign of every zero included, in every memory layout
    g = torch.Generator().manual_seed(7)
    w = torch.randn(8, 4, 3, 3, generator=g)
    s = torch.randn(8, 4, 3, 3, generator=g, requires_grad=True)
    mask = s.detach().abs() > 0.5
    if layout == "channels_last":
        w, mask = w.contiguous(memory_format=torch.channels_last), mask.contiguous(memory_format=torch.channels_last)
    elif layout == "transposed":
        w, s, mask = w.transpose(0, 1), s.detach().transpose(0, 1).requires_grad_(True), mask.transpose(0, 1)
    low = w.to(dtype)
    out = MaskedWeight.apply(w, s, mask, False, low)
    assert out.dtype == dtype and out.shape == w.shape
    assert torch.equal(out.view(torch.int16), (low * mask).view(torch.int16))
    assert not torch.equal(out, low)  # something was masked


@pytest.mark.parametrize("fused", [True, False])
def test_a_fused_optimiser_step_never_leaves_a_stale_mask(fused: bool) -> None:
    """PyTorch's fused optimisers (the transformers Trainer's default) change parameters in place without
    bumping their version counter; the cached mask must still follow the scores (it kept the first step's
    mask for a whole run before)."""
    import supermask
    from supermask.core.masks import kept_count as count
    from supermask.core.masks import topk_mask

    torch.manual_seed(0)
    model = supermask.to_supermask(torch.nn.Sequential(torch.nn.Linear(20, 30)), supermask.SupermaskConfig(k=0.3))
    layer = model[0]
    opt = torch.optim.AdamW([layer.scores], lr=0.5, fused=fused)
    x = torch.randn(8, 20)
    changed = 0
    for _ in range(5):
        before = layer.mask().clone()
        model(x).square().sum().backward()
        opt.step()
        opt.zero_grad()
        fresh = topk_mask(layer.scores.detach().abs().reshape(-1), count(0.3, 600))  # selected anew
        assert torch.equal(layer.mask().reshape(-1), fresh)
        changed += int(not torch.equal(before, layer.mask()))
    assert changed > 0  # the masks did move: the check above compared something
