"""Conversion in two explicit steps (issue 26, item 3): plan_conversion checks and chooses without
changing anything; apply_conversion makes the tensors and wraps the planned layers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import supermask
from supermask.core.config import SupermaskConfig
from supermask.core.layers import supermask_layers
from supermask.models import create


def state_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3), nn.LayerNorm(3))


def test_no_match_raises_and_leaves_model_untouched() -> None:
    model = create("conv2", image_size=8)
    before = copy.deepcopy(model)
    with pytest.raises(supermask.SupermaskError, match="no module matched"):
        supermask.to_supermask(model, SupermaskConfig(target_modules=["does_not_exist"]))
    with pytest.raises(supermask.SupermaskError, match="no module matched"):
        supermask.to_supermask(model, SupermaskConfig(target_modules=r"features\..*", exclude_modules=[nn.Conv2d]))
    assert state_equal(model, before) and str(model) == str(before)
    with pytest.raises(supermask.SupermaskConfigError, match="regular expression"):
        supermask.to_supermask(model, SupermaskConfig(target_modules="("))
    assert str(model) == str(before)


def test_targets_by_type_name_suffix_and_regex() -> None:
    def names(cfg: SupermaskConfig) -> list[str]:
        m = create("conv2", image_size=8)
        supermask.to_supermask(m, cfg)
        return m.supermask_report.converted

    assert names(SupermaskConfig(target_modules=[nn.Linear])) == ["classifier.1", "classifier.3", "classifier.5"]
    assert names(SupermaskConfig(target_modules=["features.0", "5"])) == ["features.0", "classifier.5"]
    assert names(SupermaskConfig(target_modules=r"features\.\d")) == ["features.0", "features.2"]
    assert names(SupermaskConfig(first_layer_dense=True, last_layer_dense=True)) == [
        "features.2",
        "classifier.1",
        "classifier.3",
    ]


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
