"""What the papers' recipes need (issue 23, item 1): SGDW, the exponential schedule, ELU-scaled
signed-constant weights, Xavier-scaled signed-supermask scores, model arguments; each pinned against the
paper's description."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import supermask as sm
from supermask import cli
from supermask.models import create
from supermask.runconfig import experiment_key, load_run_config
from supermask.train import SGDW, build_optimizer, learning_rate

RECIPES = sorted((Path(__file__).resolve().parents[1] / "configs" / "papers").rglob("*.yaml"))


def test_sgdw_decays_outside_the_gradient_and_momentum_with_the_schedule() -> None:
    """Loshchilov & Hutter's SGDW: x <- x - eta_t * lambda * x - (momentum step on the gradient alone)."""
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(5))
    ref = p.detach().clone()
    opt = SGDW([{"params": [p], "decoupled_weight_decay": 0.01}], lr=0.1, momentum=0.9, nesterov=True)
    plain = torch.optim.SGD([ref := nn.Parameter(ref)], lr=0.1, momentum=0.9, nesterov=True)
    for step, lr in enumerate([0.1, 0.1, 0.05]):
        grad = torch.randn(5)
        for group in (*opt.param_groups, *plain.param_groups):
            group["lr"] = lr
        p.grad, ref.grad = grad.clone(), grad.clone()
        with torch.no_grad():
            ref.mul_(1 - 0.01 * lr / 0.1)  # the decay, scaled by the schedule's multiplier
        opt.step()
        plain.step()
        assert torch.allclose(p, ref, atol=1e-7), step


def test_exponential_schedule_is_a_staircase() -> None:
    cfg = load_run_config(None, ["optim.schedule=exponential", "optim.lr=0.05", "optim.decay_epochs=2.5"])
    steps = 10  # per epoch
    lrs = [learning_rate(cfg, s, 1000, steps) for s in (0, 24, 25, 49, 50)]
    assert lrs == [0.05, 0.05, 0.05 * 0.96, 0.05 * 0.96, 0.05 * 0.96**2]


def test_sgdw_from_a_config_puts_the_decay_on_the_scores_only() -> None:
    cfg = load_run_config(None, ["optim.name=sgdw", "optim.weight_decay=5e-4", "optim.nesterov=true"])
    model = sm.to_supermask(create("mlp", num_classes=10, in_channels=1, image_size=8), cfg.supermask_config())
    opt = build_optimizer(cfg, model)
    assert isinstance(opt, SGDW)
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups)  # never coupled through the gradient
    assert opt.param_groups[0]["decoupled_weight_decay"] == 5e-4 and opt.param_groups[0]["nesterov"]


def test_elus_weights_are_sqrt3_times_he() -> None:
    model = sm.to_supermask(
        nn.Sequential(nn.Linear(784, 300, bias=False)),
        sm.SupermaskConfig(method="signed-supermask", weight_init="signed_constant", nonlinearity="elus"),
    )
    w = model[0].base_layer.weight
    assert torch.allclose(w.abs(), torch.full_like(w, math.sqrt(3) * math.sqrt(2 / 784)))


def test_xavier_scores_and_their_relative_threshold() -> None:
    cfg = sm.SupermaskConfig(method="signed-supermask", options={"threshold": 0.4, "score_scale": "xavier"})
    model = sm.to_supermask(nn.Sequential(nn.Linear(784, 300, bias=False), nn.Linear(300, 10, bias=False)), cfg)
    for layer, (fan_in, fan_out) in zip((model[0], model[1]), ((784, 300), (300, 10))):
        bound = math.sqrt(6 / (fan_in + fan_out))
        s = layer.scores.detach()
        assert s.abs().max() <= bound and s.abs().max() > 0.95 * bound  # Xavier-uniform
        mask = layer.mask()
        assert torch.equal(mask, torch.where(s.abs() > 0.4 * bound, torch.sign(s), torch.zeros_like(s)))
        assert abs(float((mask != 0).float().mean()) - 0.6) < 0.05  # 1 - 0.4 of the weights at the start
    with pytest.raises(sm.SupermaskConfigError, match="score_scale"):
        sm.SupermaskConfig(method="signed-supermask", options={"score_scale": "he"})


def test_xavier_signed_masks_save_and_load_exactly(tmp_path: Path) -> None:
    cfg = sm.SupermaskConfig(method="signed-supermask", options={"score_scale": "xavier"})
    net = lambda: nn.Sequential(nn.Linear(20, 30, bias=False), nn.ELU(), nn.Linear(30, 4, bias=False))  # noqa: E731
    torch.manual_seed(1)
    model = sm.to_supermask(net(), cfg)
    with torch.no_grad():
        model[0].scores.mul_(torch.rand_like(model[0].scores) * 3)
    sm.save(model, tmp_path / "c")
    loaded = sm.load(tmp_path / "c", net())
    x = torch.randn(8, 20)
    assert torch.equal(loaded.eval()(x), model.eval()(x))


def test_model_kwargs_reach_the_model_and_old_configs_still_resume() -> None:
    elu = create("fc", num_classes=10, in_channels=1, image_size=28, activation="elu")
    assert any(isinstance(m, nn.ELU) for m in elu.modules()) and not any(isinstance(m, nn.ReLU) for m in elu.modules())
    with pytest.raises(sm.SupermaskConfigError, match="cannot take"):
        create("fc", num_classes=10, nope=1)
    with pytest.raises(sm.SupermaskConfigError, match="cannot set num_classes, width"):
        load_run_config(None, ["model.kwargs={width: 2, num_classes: 3}"])
    cfg = load_run_config(None, [])
    saved = cfg.to_dict()
    for section, key in (("model", "kwargs"), ("optim", "decay_rate"), ("optim", "decay_epochs")):
        del saved[section][key]  # a config written before these keys existed
    assert experiment_key(saved) == experiment_key(cfg.to_dict())


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_paper_recipe_names_its_source_and_resolves(recipe: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    text = recipe.read_text()
    assert "Published" in text and "%" in text  # the paper, its table and its figure, in the comment
    assert cli.main(["train", str(recipe), "--print-config"]) == 0


def test_glorot_signed_constant_is_fan_avg_with_linear_gain() -> None:
    cfg = sm.SupermaskConfig(
        method="bernoulli", weight_init="signed_constant", nonlinearity="linear", fan_mode="fan_avg"
    )
    model = sm.to_supermask(nn.Sequential(nn.Linear(784, 300, bias=False)), cfg)
    w = model[0].base_layer.weight
    assert torch.allclose(w.abs(), torch.full_like(w, math.sqrt(2 / (784 + 300))))


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
