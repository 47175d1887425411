"""state_dict() carries what defines a converted network (issue 24, item 3): after set_k, what every
trainer does (state_dict, then load_state_dict) gives the same outputs, never the converted k again."""

from __future__ import annotations

import torch
from safetensors.torch import load_file, save_file
from torch import nn

import supermask as sm


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 20, bias=False), nn.ReLU(), nn.Linear(20, 3, bias=False))


X = torch.randn(6, 10)


def test_set_k_survives_state_dict_and_load_state_dict(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = sm.to_supermask(_net(), sm.SupermaskConfig(k=0.5))
    sm.set_k(model, 0.3)
    expected = model.eval()(X)
    for state in (model.state_dict(), _via_safetensors(model.state_dict(), tmp_path)):
        fresh = sm.to_supermask(_net(), sm.SupermaskConfig(k=0.5))
        fresh.load_state_dict(state)
        assert torch.equal(fresh.eval()(X), expected)
        assert sm.get_config(fresh).k == 0.3 and all(layer.k == 0.3 for _, layer in sm.supermask_layers(fresh))
        sm.save(fresh, tmp_path / "ckpt")  # the checkpoint follows the loaded k
        assert torch.equal(sm.load(tmp_path / "ckpt", _net()).eval()(X), expected)


def _via_safetensors(state: dict, tmp_path) -> dict:  # type: ignore[no-untyped-def]
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "s.safetensors"))  # the HF Trainer's format
    return load_file(str(tmp_path / "s.safetensors"))


def test_a_state_dict_from_before_k_travelled_still_loads() -> None:
    model = sm.to_supermask(_net(), sm.SupermaskConfig(k=0.5))
    old = {k: v for k, v in model.state_dict().items() if not k.endswith("_extra_state")}
    fresh = sm.to_supermask(_net(), sm.SupermaskConfig(k=0.5))
    result = fresh.load_state_dict(old)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(fresh.eval()(X), model.eval()(X))


def test_a_bad_k_in_a_state_dict_is_refused() -> None:
    model = sm.to_supermask(_net(), sm.SupermaskConfig(k=0.5))
    state = model.state_dict()
    state["0._extra_state"] = torch.tensor([1.5], dtype=torch.float64)
    import pytest

    with pytest.raises(sm.SupermaskConfigError, match="fraction of weights KEPT"):
        sm.to_supermask(_net(), sm.SupermaskConfig(k=0.5)).load_state_dict(state)
