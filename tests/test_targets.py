"""Conversion in two explicit steps (issue 26, item 3): plan_conversion checks and chooses without
changing anything; apply_conversion makes the tensors and wraps the planned layers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import supermask
from supermask.core.layers import supermask_layers
from supermask.runconfig import load_run_config, set_key


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3), nn.LayerNorm(3))


def test_the_plan_changes_nothing_and_names_what_apply_will_do() -> None:
    model = net()
    before = copy.deepcopy(model.state_dict())
    plan = supermask.plan_conversion(model, supermask.SupermaskConfig(k=0.5))
    assert [name for name, _ in plan.targets] == ["0", "3"]
    assert [name for name, _ in plan.batchnorms] == ["1"]
    assert [entry.name for entry, _ in plan.unconverted] == ["4"]  # the LayerNorm (the BatchNorm: batchnorm=)
    assert all(type(m) is not supermask.SupermaskLinear for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())  # nothing frozen yet


def test_plan_then_apply_is_to_supermask() -> None:
    x = torch.randn(4, 6)
    cfg = supermask.SupermaskConfig(k=0.5, seed=3)
    one = supermask.to_supermask(net(), cfg).eval()
    model = net()
    two = supermask.apply_conversion(model, supermask.plan_conversion(model, cfg)).eval()
    assert torch.equal(one(x), two(x))
    assert str(one.supermask_report) == str(two.supermask_report)


def test_apply_takes_given_weights_and_leaves_placeholder_scores_to_be_set() -> None:
    model = net()
    plan = supermask.plan_conversion(model, supermask.SupermaskConfig(k=0.5))
    weights = {"0": torch.full((8, 6), 0.25), "3": torch.full((3, 8), -0.5)}
    supermask.apply_conversion(model, plan, weights=weights, initial_scores=False)
    layers = dict(supermask_layers(model))
    assert torch.equal(layers["0"].base_layer.weight, weights["0"]) and layers["3"].scores.shape == (3, 8)


def test_a_bad_config_fails_in_the_plan_with_the_model_untouched() -> None:
    model = net()
    with pytest.raises(supermask.SupermaskError, match="no module matched"):
        supermask.plan_conversion(model, supermask.SupermaskConfig(target_modules=["nothing"]))
    assert not supermask_layers(model)


def test_the_run_config_checks_its_supermask_section_once(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_run_config(None, ["supermask.k=0.3"])
    calls = []
    real = supermask.SupermaskConfig.validate
    monkeypatch.setattr(supermask.SupermaskConfig, "validate", lambda self: calls.append(1) or real(self))
    assert cfg.supermask_config().k == 0.3 and cfg.supermask_config().k == 0.3
    assert calls == []  # checked when the config was loaded
    given = cfg.supermask_config()
    given.k = 0.9  # a model's set_k changes its own copy, never the run config's
    assert cfg.supermask_config().k == 0.3
    set_key(cfg, "supermask.k", 0.7)
    assert cfg.supermask_config().k == 0.7 and len(calls) == 1  # a changed setting is checked again
    with pytest.raises(supermask.SupermaskConfigError, match="k=2"):
        set_key(cfg, "supermask.k", 2.0)
        cfg.supermask_config()
