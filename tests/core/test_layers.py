"""Masks on any weight (issue 24, item 1): parameters that their module's own forward reads are masked in
place, with the guarantees of wrapped layers (checks before changes, the report, save / load bit-exact,
merge, state_dict, task masks). timm cannot be installed beside this torch build: its layers are copied
here as local stand-ins with the same structure (a Conv2d / Linear subclass with its own forward).

state_dict() carries what defines a converted network (issue 24, item 3): after set_k, what every
trainer does (state_dict, then load_state_dict) gives the same outputs, never the converted k again."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

import supermask
import supermask as sm
from supermask.core.layers import SupermaskParameter, supermask_layers

METHODS = ["edge-popup", "edge-popup-global", "biprop", "signed-supermask", "bernoulli", "iterand", "dense"]


class StdConv2d(nn.Conv2d):
    """timm's weight-standardised convolution (BiT ResNetV2): its forward standardises self.weight."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, training=True, eps=1e-6)
        return F.conv2d(x, w.reshape_as(self.weight), self.bias, self.stride, self.padding, self.dilation, self.groups)


class Conv2dSame(nn.Conv2d):
    """timm's TensorFlow-style 'SAME' padding: pads in forward, then convolves self.weight."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        ph = max((math.ceil(ih / self.stride[0]) - 1) * self.stride[0] + kh - ih, 0)
        pw = max((math.ceil(iw / self.stride[1]) - 1) * self.stride[1] + kw - iw, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class TimmLinear(nn.Linear):
    """timm's Linear: casts the weight to the input's dtype in its own forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, self.weight.to(x.dtype), bias)


class Mixture(nn.Module):
    """Two experts as one raw 3-D parameter, as mixture-of-experts layers store them."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.experts = nn.Parameter(torch.randn(2, dim, dim) / dim**0.5)
        self.gate = nn.Linear(dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.gate(x).softmax(-1)
        return sum(weights[..., e : e + 1] * (x @ self.experts[e]) for e in range(2))  # type: ignore[return-value]


class Net(nn.Module):
    """BiT-like stem, a 'SAME' conv, attention with separate key/value sizes, a transposed conv, experts."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = StdConv2d(3, 8, 3, padding=1)
        self.same = Conv2dSame(8, 8, 3, stride=2)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.attn = nn.MultiheadAttention(4, 2, kdim=6, vdim=6, batch_first=True)
        self.mix = Mixture(4)
        self.head = TimmLinear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(F.relu(self.same(F.relu(self.stem(x)))))  # (n, 4, 8, 8)
        tokens = h.flatten(2).transpose(1, 2)  # (n, 64, 4)
        memory = torch.cat([tokens, tokens[..., :2]], -1)  # (n, 64, 6): other key / value sizes
        out, _ = self.attn(tokens, memory, memory, need_weights=False)
        return self.head(self.mix(out).mean(1))


def net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net()


def config(method: str = "edge-popup", **kwargs: object) -> supermask.SupermaskConfig:
    return supermask.SupermaskConfig(k=0.5, method=method, target_parameters=["mix.experts"], seed=4, **kwargs)  # type: ignore[arg-type]


def trained(model: nn.Module, x: torch.Tensor, steps: int = 3) -> nn.Module:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        model(x).log_softmax(-1)[:, 0].neg().mean().backward()  # bounded gradients, whatever the method
        opt.step()
    return model.eval()


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 20, bias=False), nn.ReLU(), nn.Linear(20, 3, bias=False))


X = torch.randn(6, 10)


def _via_safetensors(state: dict, tmp_path) -> dict:  # type: ignore[no-untyped-def]
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "s.safetensors"))  # the HF Trainer's format
    return load_file(str(tmp_path / "s.safetensors"))


def test_eval_mask_is_cached_until_scores_or_k_change(monkeypatch: pytest.MonkeyPatch) -> None:
    import supermask.core.methods.edge_popup as layers

    calls = []
    real = layers.topk_mask

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(layers, "topk_mask", counting)
    m = nn.Sequential(nn.Linear(8, 4))
    supermask.to_supermask(m)
    m.eval()
    x = torch.randn(3, 8)
    with torch.no_grad():
        first = m(x)
        for _ in range(5):
            assert torch.equal(m(x), first)
    assert len(calls) == 1
    opt = torch.optim.SGD([m[0].scores], lr=10.0)
    m.train()
    m(x).sum().backward()
    opt.step()
    m.eval()
    with torch.no_grad():
        m(x)
    assert len(calls) == 2  # the training forward reused the mask; once more after the step
    supermask.set_k(m, 0.2)
    with torch.no_grad():
        m(x)
    assert len(calls) == 3


def test_every_weight_is_masked_and_the_report_says_how() -> None:
    model = supermask.to_supermask(net(), config())
    report = model.supermask_report
    assert report.in_place == [
        "stem.weight",
        "same.weight",
        "up.weight",
        "attn.q_proj_weight",
        "attn.k_proj_weight",
        "attn.v_proj_weight",
        "head.weight",
        "mix.experts",
    ]
    assert "attn.out_proj" in report.converted and "mix.gate" in report.converted
    assert report.skipped == [] and "masked in place" in str(report)
    rows = supermask.sparsity_report(model)
    weights = sum(p.numel() for p in net().parameters() if p.dim() > 1)
    assert rows["converted"]["total"] == weights  # every weight matrix and kernel is masked
    assert all(r["kept"] == round(0.5 * r["total"]) for r in rows["layers"])
    assert type(model.stem).__name__ == "SupermaskedStdConv2d" and isinstance(model.stem, StdConv2d)


@pytest.mark.parametrize("method", METHODS)
def test_save_load_and_merge_are_exact(method: str, tmp_path: Path) -> None:
    x = torch.randn(2, 3, 8, 8)
    model = trained(supermask.to_supermask(net(), config(method)), x)
    with torch.no_grad():
        out = model(x)
    supermask.save(model, tmp_path)
    loaded = supermask.load(tmp_path, net(seed=1)).eval()  # other initial weights: everything comes from the file
    with torch.no_grad():
        assert torch.equal(loaded(x), out)
    plain = supermask.merge(copy.deepcopy(loaded))
    assert not any(isinstance(m, supermask.SupermaskLayer) for m in plain.modules())
    assert type(plain.stem) is StdConv2d and type(plain.attn) is nn.MultiheadAttention
    assert sorted(n for n, _ in plain.named_parameters()) == sorted(n for n, _ in net().named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(plain(x), out, rtol=1e-5, atol=1e-6)


def test_a_whole_model_pickles_as_torch_save_does(tmp_path: Path) -> None:
    """torch.save(model) / torch.load: the generated Supermasked<Class> is rebuilt from its base class (in a
    fresh process it is not yet generated: the class cache is emptied to stand for one); training goes on."""
    import supermask.core.layers as layers

    x = torch.randn(2, 3, 8, 8)
    model = trained(supermask.to_supermask(net(), config()), x)
    with torch.no_grad():
        out = model(x)
    torch.save(model, tmp_path / "model.pt")
    layers._MASKED_CLASSES.clear()
    loaded = torch.load(tmp_path / "model.pt", weights_only=False).eval()
    assert type(loaded.stem).__name__ == "SupermaskedStdConv2d" and isinstance(loaded.stem, StdConv2d)
    assert type(loaded.attn) is not type(model.attn) and isinstance(loaded.attn, nn.MultiheadAttention)
    with torch.no_grad():
        assert torch.equal(loaded(x), out)
    trained(loaded.train(), x, steps=1)  # its scores still learn
    with torch.no_grad():
        assert not torch.equal(loaded(x), out)


def test_the_scores_of_an_in_place_mask_learn() -> None:
    x = torch.randn(2, 3, 8, 8)
    model = supermask.to_supermask(net(), config())
    model(x).sum().backward()
    for name, layer in supermask_layers(model):
        assert layer.scores.grad is not None and bool(layer.scores.grad.abs().sum() > 0), name
    frozen = model.stem.supermask_weight.base_layer.weight
    assert not frozen.requires_grad and model.stem.bias is not None and not model.stem.bias.requires_grad


def test_state_dict_round_trip_and_set_k() -> None:
    x = torch.randn(2, 3, 8, 8)
    model = trained(supermask.to_supermask(net(), config()), x)
    supermask.set_k(model, 0.3)
    other = supermask.to_supermask(net(), config())
    other.load_state_dict(model.state_dict())
    other.eval()
    with torch.no_grad():
        assert torch.equal(other(x), model(x))
    assert all(layer.k == 0.3 for _, layer in supermask_layers(other))


def test_task_masks_over_in_place_parameters(tmp_path: Path) -> None:
    x = torch.randn(2, 3, 8, 8)
    model = supermask.to_supermask(net(), config(tasks=2))
    outs = []
    for task in range(2):
        supermask.set_task(model, task)
        trained(model.train(), x, steps=2)
        with torch.no_grad():
            outs.append(model(x))
    supermask.save(model, tmp_path)
    loaded = supermask.load(tmp_path, net()).eval()
    for task in range(2):
        supermask.set_task(loaded, task)
        with torch.no_grad():
            assert torch.equal(loaded(x), outs[task])


def test_target_parameters_mistakes_are_one_line_errors_before_any_change() -> None:
    cases = [
        (["mix.expert"], "no parameter is named 'mix.expert'"),
        (["attn.in_proj_bias"], "1-D"),
        (["mix.gate.bias"], "belongs to a converted layer"),
        ("nothing.*", "matches no parameter"),
        ([3], "target_parameters must be None, a list of parameter names"),
    ]
    for spec, message in cases:
        model = net()
        before = copy.deepcopy(model.state_dict())
        with pytest.raises(supermask.SupermaskError, match=message):
            supermask.to_supermask(model, supermask.SupermaskConfig(target_parameters=spec))
        assert type(model.stem) is StdConv2d and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_tied_parameter_is_refused() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = Mixture(4)
            self.b = Mixture(4)
            self.b.experts = self.a.experts

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x))

    with pytest.raises(supermask.SupermaskError, match="tied"):
        supermask.to_supermask(Tied(), supermask.SupermaskConfig(target_parameters=["a.experts"]))


def test_a_checkpoint_refuses_a_model_whose_module_differs(tmp_path: Path) -> None:
    supermask.save(supermask.to_supermask(net(), config()), tmp_path)
    other = net()
    other.stem = nn.Conv2d(3, 8, 3, padding=1)  # a plain conv where the checkpoint masked a StdConv2d in place
    with pytest.raises(supermask.CheckpointError, match="wrong architecture"):
        supermask.load(tmp_path, other)
    assert type(other.stem) is nn.Conv2d and not supermask_layers(other)


def test_a_module_shared_under_two_names_is_masked_once() -> None:
    attn = nn.MultiheadAttention(4, 2, batch_first=True)
    model = nn.ModuleDict({"first": attn, "second": attn, "head": nn.Linear(4, 2)})
    supermask.to_supermask(model, supermask.SupermaskConfig())
    layers = [layer for _, layer in supermask_layers(model) if isinstance(layer, SupermaskParameter)]
    assert [layer.layer_name for layer in layers] == ["first.in_proj_weight"]
    assert model["second"].in_proj_weight is not None and model["first"] is model["second"]


def test_the_command_line_takes_target_parameters() -> None:
    from supermask.runconfig import load_run_config

    cfg = load_run_config(None, ["supermask.target_parameters=[experts]"])
    assert cfg.supermask_config().target_parameters == ["experts"]


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
