"""Tests of supermask.core.methods.bernoulli."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import supermask
import supermask as sm
from tests.helpers.masks import surrogate_grads


def test_straight_through_gradient_bernoulli() -> None:
    g_scores, g_eff, weight, scores = surrogate_grads("bernoulli")
    p = torch.sigmoid(scores)
    assert torch.allclose(g_scores, g_eff * weight * p * (1 - p), atol=1e-6)


def test_bernoulli_eval_masks() -> None:
    m = nn.Sequential(nn.Linear(200, 100))
    cfg = supermask.SupermaskConfig(method="bernoulli", score_init="constant", score_init_value=1.0, seed=3)
    supermask.to_supermask(m, cfg)
    m.eval()
    first = m[0].mask().clone()
    assert abs(first.float().mean().item() - torch.sigmoid(torch.tensor(1.0)).item()) < 0.01  # one fair draw
    m2 = nn.Sequential(nn.Linear(200, 100))
    supermask.to_supermask(m2, cfg)
    m2.eval()
    assert torch.equal(m2[0].mask(), first)  # fixed by seed and layer name, not by torch's RNG
    m.train()
    torch.manual_seed(0)
    assert not torch.equal(m[0].mask(), first)  # training draws anew
    t = nn.Sequential(nn.Linear(200, 100))
    supermask.to_supermask(
        t, supermask.SupermaskConfig(method="bernoulli", score_init="uniform", bernoulli_eval="threshold")
    )
    t.eval()
    assert torch.equal(t[0].mask(), t[0].scores.detach() > 0)


def test_dynamic_rescaling_keeps_the_weight_mass_and_its_gradient_reaches_the_scores() -> None:
    """Zhou et al.'s dynamic weight rescaling: w_eff = w * m * numel / sum(m), the kept count's gradient
    through sum(sigmoid(s)) (the straight-through surrogate of the sampled mask)."""
    torch.manual_seed(0)
    base = sm.SupermaskConfig(method="bernoulli", score_init="uniform", score_init_value=2.0)
    dynamic = sm.SupermaskConfig(**{**base.__dict__, "options": {"rescale": "dynamic"}})
    layers = [sm.to_supermask(nn.Sequential(nn.Linear(50, 40, bias=False)), c)[0] for c in (base, dynamic)]
    for layer in layers:
        layer.eval()
    plain, scaled = (layer.effective_weight() for layer in layers)
    mask = layers[1].mask().bool()
    assert torch.equal(layers[0].mask(), layers[1].mask())  # same scores, same eval draw
    assert torch.allclose(scaled, plain * (mask.numel() / mask.sum()))
    assert torch.allclose(scaled.abs().sum(), layers[1].base_layer.weight.abs().sum())  # signed constant: mass kept
    # the gradient: autograd through the formula, with the sampled mask fixed
    layer = layers[1].train()
    s = layer.scores.detach().clone().requires_grad_(True)
    w = layer.base_layer.weight.detach()
    m = mask.float()
    p = torch.sigmoid(s)
    g = torch.randn_like(w)
    reference = (w * (m + p - p.detach()) * (m.numel() / (m.sum() + (p - p.detach()).sum()))).mul(g).sum()
    (expected,) = torch.autograd.grad(reference, s)
    got = layer.method.effective_weight(layer, w, layer.scores, mask)
    (actual,) = torch.autograd.grad(got.mul(g).sum(), layer.scores)
    assert torch.allclose(actual, expected, rtol=1e-5, atol=1e-7)
    with pytest.raises(sm.SupermaskConfigError, match="rescale"):
        sm.SupermaskConfig(method="bernoulli", options={"rescale": "static"})


def _bernoulli_model(**config: object) -> nn.Module:
    m = nn.Sequential(nn.Linear(60, 40), nn.ReLU(), nn.Linear(40, 10))
    cfg = supermask.SupermaskConfig(method="bernoulli", score_init="uniform", seed=5, **config)  # type: ignore[arg-type]
    supermask.to_supermask(m, cfg)
    return m.eval()


def test_eval_draws_are_independent_fixed_draws_and_draw_0_is_the_runs() -> None:
    m = _bernoulli_model()
    layers = [layer for _, layer in supermask.supermask_layers(m)]
    own = [layer.mask().clone() for layer in layers]
    supermask.set_eval_draw(m, 3)
    third = [layer.mask().clone() for layer in layers]
    assert all(not torch.equal(a, b) for a, b in zip(own, third))  # the cache follows the draw
    for layer, mask in zip(layers, third):  # each draw is distributed like the training masks
        p = torch.sigmoid(layer.scores.detach().double())
        assert abs(mask.double().mean().item() - p.mean().item()) < 0.03
    other = _bernoulli_model()
    supermask.set_eval_draw(other, 3)  # fixed by seed, layer and draw number, not by torch's RNG
    assert all(torch.equal(layer.mask(), mask) for (_, layer), mask in zip(supermask.supermask_layers(other), third))
    supermask.set_eval_draw(m, 0)
    assert all(torch.equal(layer.mask(), mask) for layer, mask in zip(layers, own))
    m.train()
    torch.manual_seed(0)
    assert not torch.equal(layers[0].mask(), third[0])  # training still draws anew


def test_eval_draws_are_refused_where_every_draw_is_the_same_mask(tmp_path: Path) -> None:
    for bad in (-1, 1.0, True, "2"):
        with pytest.raises(sm.SupermaskConfigError, match="a draw is an integer >= 0"):
            supermask.set_eval_draw(_bernoulli_model(), bad)  # type: ignore[arg-type]
    with pytest.raises(sm.SupermaskConfigError, match="bernoulli_eval='threshold' gives one deterministic"):
        supermask.set_eval_draw(_bernoulli_model(bernoulli_eval="threshold"), 1)
    edge = nn.Sequential(nn.Linear(60, 40))
    supermask.to_supermask(edge, supermask.SupermaskConfig(k=0.5))
    with pytest.raises(sm.SupermaskConfigError, match="'edge-popup' has one deterministic eval mask"):
        supermask.set_eval_draw(edge, 1)
    m = _bernoulli_model()
    supermask.save(m, tmp_path / "masks")  # masks only: the loaded scores select that one mask
    loaded = nn.Sequential(nn.Linear(60, 40), nn.ReLU(), nn.Linear(40, 10))
    supermask.load(tmp_path / "masks", loaded)
    with pytest.raises(sm.SupermaskConfigError, match="every draw is the same mask"):
        supermask.set_eval_draw(loaded, 1)
    supermask.save(m, tmp_path / "scores", include_scores=True)
    loaded = nn.Sequential(nn.Linear(60, 40), nn.ReLU(), nn.Linear(40, 10))
    supermask.load(tmp_path / "scores", loaded)
    loaded.eval()
    supermask.set_eval_draw(loaded, 1)
    supermask.set_eval_draw(m, 1)
    assert all(
        torch.equal(a.mask(), b.mask())
        for (_, a), (_, b) in zip(supermask.supermask_layers(loaded), supermask.supermask_layers(m))
    )


def test_a_checkpoint_stores_draw_0_whatever_the_draw_in_use(tmp_path: Path) -> None:
    m = _bernoulli_model()
    own = [layer.mask().clone() for _, layer in supermask.supermask_layers(m)]
    supermask.set_eval_draw(m, 3)
    third = [layer.mask().clone() for _, layer in supermask.supermask_layers(m)]
    for include_scores in (False, True):  # with its scores, load re-selects the mask and must find it
        supermask.save(m, tmp_path / str(include_scores), include_scores=include_scores)
        loaded = supermask.load(
            tmp_path / str(include_scores), nn.Sequential(nn.Linear(60, 40), nn.ReLU(), nn.Linear(40, 10))
        )
        loaded.eval()
        assert all(torch.equal(layer.mask(), mask) for (_, layer), mask in zip(supermask.supermask_layers(loaded), own))
    assert all(torch.equal(layer.mask(), mask) for (_, layer), mask in zip(supermask.supermask_layers(m), third))
