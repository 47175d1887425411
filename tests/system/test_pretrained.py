"""Masks over existing (pretrained) weights: the base is kept, checkpoints hold only what it lacks plus
its fingerprints, and a wrong base is refused (issue 14, item 1)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

import supermask
from supermask.core.methods import method_names

PRETRAINED = {"weight_init": "pretrained", "bias": "frozen", "batchnorm": "learned"}


def base_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LayerNorm(144), nn.Linear(144, 5)
    )
    with torch.no_grad():  # "trained": non-default statistics and norms
        model[1].running_mean.uniform_(-1, 1)
        model[4].weight.uniform_(0.5, 1.5)
    return model.eval()


X = torch.randn(6, 3, 8, 8)


def fit(model: nn.Module, steps: int = 4) -> nn.Module:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(X), torch.arange(6) % 5).backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("method", [m for m in method_names() if m not in ("iterand", "positive-top-k")])
def test_masks_over_a_trained_model_keep_its_weights_and_reload_exactly(method: str, tmp_path: Path) -> None:
    original = base_model()
    model = supermask.to_supermask(copy.deepcopy(original), supermask.SupermaskConfig(method=method, **PRETRAINED))
    assert torch.equal(model[0].base_layer.weight, original[0].weight)  # its own weights, not random ones
    assert torch.equal(model[5].base_layer.bias, original[5].bias)
    fit(model)
    with torch.no_grad():
        out = model(X)
    supermask.save(model, tmp_path / "ck")
    loaded = supermask.load(tmp_path / "ck", copy.deepcopy(original)).eval()
    with torch.no_grad():
        assert torch.equal(loaded(X), out)
        assert torch.allclose(supermask.merge(loaded)(X), out, atol=1e-6, rtol=0)
    stored = load_file(next((tmp_path / "ck").glob("*.safetensors")))
    if model[0].method.has_scores:  # the frozen base weights are fingerprinted, never copied
        assert not any(k in stored for k in ("state/4.weight", "state/5.base_layer.weight", "state/5.base_layer.bias"))
    assert "state/1.running_mean" in stored  # statistics and trained parameters are stored


@pytest.mark.parametrize(("change", "named"), [("5.weight", "layer '5'"), ("4.weight", "parameter '4.weight'")])
def test_a_different_base_is_refused_naming_the_first_difference(tmp_path: Path, change: str, named: str) -> None:
    model = fit(supermask.to_supermask(base_model(), supermask.SupermaskConfig(method="threshold", **PRETRAINED)))
    supermask.save(model, tmp_path / "ck")
    other = base_model()
    with torch.no_grad():
        other.get_parameter(change).view(-1)[3] += 1e-3
    before = copy.deepcopy(other.state_dict())
    with pytest.raises(supermask.CheckpointError, match=f"wrong base model: .*{named}"):
        supermask.load(tmp_path / "ck", other)
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())  # untouched


def test_pretrained_never_silently_destroys_the_base() -> None:
    with pytest.raises(supermask.SupermaskConfigError, match="bias='zero' would zero the pretrained biases"):
        # bias='zero' said explicitly (issue 24: the default now keeps pretrained biases, frozen)
        supermask.to_supermask(
            base_model(), supermask.SupermaskConfig(weight_init="pretrained", batchnorm="learned", bias="zero")
        )
    with pytest.raises(supermask.SupermaskConfigError, match="would drop the pretrained BatchNorm affine"):
        supermask.to_supermask(base_model(), supermask.SupermaskConfig(weight_init="pretrained", bias="frozen"))
    with pytest.raises(supermask.SupermaskConfigError, match="'iterand' re-draws"):
        supermask.SupermaskConfig(method="iterand", weight_init="pretrained")


def test_the_biases_follow_the_weights_by_default() -> None:
    """issue 24, item 8: masks over a trained model keep its trained biases unless told otherwise (the
    default was bias='zero', refused with pretrained weights until bias was set)."""
    assert supermask.SupermaskConfig().bias == "zero"  # random weights: the paper's bias-free network
    assert supermask.SupermaskConfig(weight_init="pretrained", batchnorm="learned").bias == "frozen"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    biases = [m.bias.detach().clone() for m in model if isinstance(m, nn.Linear)]
    supermask.to_supermask(model, supermask.SupermaskConfig(weight_init="pretrained"))
    kept = [layer.bias for _, layer in supermask.supermask_layers(model)]
    assert all(torch.equal(a, b) and not b.requires_grad for a, b in zip(biases, kept))
    with pytest.raises(supermask.SupermaskConfigError, match="bias='zero' would zero the pretrained biases"):
        supermask.to_supermask(
            nn.Sequential(nn.Linear(4, 5)), supermask.SupermaskConfig(weight_init="pretrained", bias="zero")
        )
