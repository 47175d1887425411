"""Tests of supermask.engine.optim."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import supermask as sm
from supermask.models import create
from supermask.runconfig import load_run_config
from supermask.train import SGDW, build_optimizer, learning_rate


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


def test_exponential_schedule_without_staircase_decays_every_step() -> None:
    """TensorFlow's ExponentialDecay(staircase=False): lr * rate ** (step / decay_steps)."""
    items = ["optim.schedule=exponential", "optim.lr=0.05", "optim.decay_rate=0.9", "optim.decay_epochs=2.5"]
    cfg = load_run_config(None, [*items, "optim.staircase=false"])
    lrs = [learning_rate(cfg, s, 1000, 10) for s in (0, 1, 12, 25, 37)]
    assert lrs == [0.05 * 0.9 ** (s / 25) for s in (0, 1, 12, 25, 37)]
    assert lrs[1] < lrs[0] and lrs[2] > 0.05 * 0.9  # between two stairs it has decayed already
    with pytest.raises(sm.SupermaskConfigError, match="optim.staircase"):
        load_run_config(None, [*items, "optim.staircase=sometimes"])


def test_sgdw_from_a_config_puts_the_decay_on_the_scores_only() -> None:
    cfg = load_run_config(None, ["optim.name=sgdw", "optim.weight_decay=5e-4", "optim.nesterov=true"])
    model = sm.to_supermask(create("mlp", num_classes=10, in_channels=1, image_size=8), cfg.supermask_config())
    opt = build_optimizer(cfg, model)
    assert isinstance(opt, SGDW)
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups)  # never coupled through the gradient
    assert opt.param_groups[0]["decoupled_weight_decay"] == 5e-4 and opt.param_groups[0]["nesterov"]


def test_rmsprop_is_pytorchs_with_the_configured_rate_momentum_and_decay() -> None:
    """SupSup's PermutedMNIST recipe trains with RMSprop (lr 1e-4, no momentum, no weight decay)."""
    cfg = load_run_config(None, ["optim.name=rmsprop", "optim.lr=0.0001", "optim.momentum=0", "optim.weight_decay=0"])
    model = sm.to_supermask(create("mlp", num_classes=10, in_channels=1, image_size=8), sm.SupermaskConfig())
    opt = build_optimizer(cfg, model)
    assert type(opt) is torch.optim.RMSprop
    assert opt.defaults["lr"] == 1e-4 and opt.defaults["momentum"] == 0 and opt.defaults["alpha"] == 0.99
    assert all(g["weight_decay"] == 0 for g in opt.param_groups)
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {
        id(p) for p in model.parameters() if p.requires_grad
    }  # the scores, never the frozen weights


@pytest.mark.parametrize("items", [["optim.name=adam"], ["optim.name=rmsprop"], ["optim.momentum=0"]])
def test_nesterov_without_sgd_momentum_is_refused_not_ignored(items: list[str]) -> None:
    with pytest.raises(sm.SupermaskConfigError, match="optim.nesterov=true needs optim.name=sgd or sgdw"):
        load_run_config(None, ["optim.nesterov=true", *items])
