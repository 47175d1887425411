"""Conversion of any model: options, targets, errors, set_k, caching, merge."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import supermask
from supermask.core.config import SupermaskConfig


class TinyEncoder(nn.Module):
    """A small transformer encoder from plain torch.nn, with an embedding and an LSTM head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 16)
        layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(16, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)).mean(1))


class SharedTwice(nn.Module):
    """One Linear registered under two names, used on two paths; and a shared block of two."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = self.a
        self.block1 = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
        self.block2 = self.block1
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.block2(self.block1(torch.relu(self.b(torch.relu(self.a(x)))))))


def _reference_forward(model: SharedTwice, x: torch.Tensor) -> torch.Tensor:
    """The forward pass computed by hand from each wrapper's frozen weight and mask."""

    def lin(layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, layer.base_layer.weight * layer.mask(), layer.base_layer.bias)

    h = torch.relu(lin(model.b, torch.relu(lin(model.a, x))))
    h = torch.relu(lin(model.block2[0], torch.relu(lin(model.block1[0], h))))
    return lin(model.out, h)


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.hidden = nn.Linear(8, 8)
        self.head = nn.Linear(8, 10, bias=False)
        self.head.weight = self.emb.weight  # tied, as language models tie input and output embeddings

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.hidden(self.emb(ids))))


class WithRawParts(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
        self.emb = nn.Embedding(5, 8)
        self.norm = nn.LayerNorm(8)
        self.body = nn.Linear(8, 8)
        self.skip_me = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = torch.cat([self.cls_token.expand(len(ids), 1, 8), self.emb(ids)], 1)
        return self.head(self.skip_me(self.body(self.norm(h)))[:, 0])


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 10, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.emb(x))


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv1d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2, padding_mode="circular"),
        nn.Conv2d(4, 8, (3, 2), stride=1, padding="same", dilation=(1, 2), groups=4, padding_mode="reflect"),
        nn.Conv2d(3, 6, 3, stride=1, padding=2, dilation=2, bias=True, padding_mode="replicate"),
        nn.Conv3d(2, 4, 3, stride=1, padding=1, groups=2, bias=False),
    ],
)
def test_conv_options_preserved(conv: nn.Module) -> None:
    model = nn.Sequential(conv)
    reference = copy.deepcopy(conv)
    supermask.to_supermask(model, SupermaskConfig(k=0.4, bias="learned"))
    layer = model[0]
    dims = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[type(conv)]
    x = torch.randn(2, conv.in_channels, *([9] * dims))
    with torch.no_grad():
        reference.weight.copy_(layer.base_layer.weight * layer.mask())
        if conv.bias is not None:
            reference.bias.copy_(layer.base_layer.bias)
    assert torch.allclose(model(x), reference(x), atol=1e-6)


def test_already_converted() -> None:
    m = nn.Sequential(nn.Linear(3, 3))
    supermask.to_supermask(m)
    with pytest.raises(supermask.SupermaskError, match="already converted"):
        supermask.to_supermask(m)


def test_transformer_encoder_converts_and_reports_skips() -> None:
    model = TinyEncoder()
    supermask.to_supermask(model, SupermaskConfig(k=0.5))
    report = model.supermask_report
    assert "encoder.layers.0.linear1" in report.converted
    assert "encoder.layers.0.self_attn.out_proj" in report.converted
    # issue 24: the packed in-projection is masked in place (it was reported as skipped before)
    assert "encoder.layers.0.self_attn.in_proj_weight" in report.converted
    assert report.in_place == ["encoder.layers.0.self_attn.in_proj_weight", "encoder.layers.1.self_attn.in_proj_weight"]
    skipped = {name: kind for name, kind, _ in report.skipped}
    assert skipped == {"embed": "Embedding"}
    tokens = torch.randint(0, 20, (4, 7))
    out = model(tokens)
    out.sum().backward()
    assert model.encoder.layers[0].self_attn.out_proj.scores.grad is not None
    model.eval()
    with torch.no_grad():  # PyTorch's fused fast path reads .weight: it must see the masked weight
        fast = model(tokens)
    merged = supermask.merge(copy.deepcopy(model))
    with torch.no_grad():
        assert torch.allclose(fast, merged(tokens), atol=1e-5)
    with pytest.raises(supermask.SupermaskError, match="cannot be converted"):
        supermask.to_supermask(TinyEncoder(), SupermaskConfig(target_modules=["embed"]))
    with pytest.raises(supermask.SupermaskError, match="Exclude it"):
        supermask.to_supermask(TinyEncoder(), SupermaskConfig(unsupported="raise"))
    ok = supermask.to_supermask(
        TinyEncoder(), SupermaskConfig(unsupported="raise", exclude_modules=["embed", "self_attn"])
    )
    assert "encoder.layers.0.self_attn.out_proj" not in ok.supermask_report.converted


def test_batchnorm_learned_and_bias_modes() -> None:
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    supermask.to_supermask(m, SupermaskConfig(batchnorm="learned", bias="learned"))
    assert m[1].affine and m[1].weight.requires_grad
    assert m[0].base_layer.bias.requires_grad
    m2 = nn.Sequential(nn.Linear(4, 2))
    b = m2[0].bias.detach().clone()
    supermask.to_supermask(m2, SupermaskConfig(bias="frozen"))
    assert torch.equal(m2[0].base_layer.bias, b) and not m2[0].base_layer.bias.requires_grad
    m3 = nn.Sequential(nn.Linear(4, 2))
    supermask.to_supermask(m3, SupermaskConfig(bias="zero"))
    assert not m3[0].base_layer.bias.any()


def test_lazy_module_is_reported() -> None:
    m = nn.Sequential(nn.LazyLinear(4), nn.Linear(4, 2))
    supermask.to_supermask(m)
    assert m.supermask_report.skipped[0][0] == "0"


def test_a_shared_module_is_masked_on_every_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = supermask.to_supermask(SharedTwice(), SupermaskConfig(k=0.25, seed=3)).eval()
    assert model.a is model.b and model.block1 is model.block2
    assert isinstance(model.b, supermask.SupermaskLayer) and isinstance(model.block2[0], supermask.SupermaskLayer)
    assert model.supermask_report.converted == ["a", "block1.0", "out"]
    assert model.supermask_report.aliases == {"a": ["b"], "block1.0": ["block2.0"]}
    x = torch.randn(5, 8)
    with torch.no_grad():
        assert torch.equal(model(x), _reference_forward(model, x))
    assert supermask.sparsity_report(model)["converted"]["kept"] == sum(round(0.25 * n) for n in (64, 64, 24))
    supermask.save(model, tmp_path / "ck")
    loaded = supermask.load(tmp_path / "ck", SharedTwice()).eval()
    assert loaded.a is loaded.b
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        merged = supermask.merge(loaded)
        assert merged.a is merged.b and type(merged.a) is nn.Linear
        assert torch.equal(merged(x), model(x))


def test_tied_weights_are_never_untied() -> None:
    model = supermask.to_supermask(Tied())
    assert model.supermask_report.converted == ["hidden"]
    assert isinstance(model.head, nn.Linear) and model.head.weight is model.emb.weight
    entries = {e.name: e for e in model.supermask_report.unconverted}
    assert "tied to emb.weight" in entries["head"].reason and not entries["head"].trainable
    with pytest.raises(supermask.SupermaskError, match="tied to emb.weight"):
        supermask.to_supermask(Tied(), SupermaskConfig(unsupported="raise", exclude_modules=["emb"]))
    with pytest.raises(supermask.SupermaskError, match="cannot be converted: its weight is tied"):
        supermask.to_supermask(Tied(), SupermaskConfig(target_modules=["head", "hidden"]))
    two = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    two[1].weight = two[0].weight  # two convertible layers sharing one weight: neither is silently untied
    supermask.to_supermask(two)
    assert two.supermask_report.converted == ["2"] and two[0].weight is two[1].weight


def test_hooked_and_parametrized_layers_are_not_wrapped() -> None:
    from torch.nn.utils import parametrize, prune

    class Symmetric(nn.Module):
        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return w.triu() + w.triu(1).transpose(0, 1)

    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    model[0].register_forward_hook(lambda *a: None)
    prune.l1_unstructured(model[1], "weight", amount=0.5)  # a forward pre-hook recomputes its weight
    parametrize.register_parametrization(model[2], "weight", Symmetric())
    supermask.to_supermask(model)
    assert model.supermask_report.converted == ["3"]
    reasons = {name: reason for name, _, reason in model.supermask_report.skipped}
    assert "forward hooks" in reasons["0"] and "forward hooks" in reasons["1"] and "parametrization" in reasons["2"]


@pytest.mark.parametrize("unconverted", ["freeze", "learn"])
def test_every_unconverted_weight_is_listed_and_frozen_or_learned(unconverted: str) -> None:
    model = supermask.to_supermask(
        WithRawParts(), SupermaskConfig(unconverted=unconverted, exclude_modules=["skip_me"], bias="learned")
    )
    report = model.supermask_report
    entries = {e.name: e for e in report.unconverted}
    assert set(entries) == {"cls_token", "emb", "norm", "skip_me"}
    assert "raw nn.Parameter" in entries["cls_token"].reason and "lookups" in entries["emb"].reason
    assert "normalisation" in entries["norm"].reason and "exclude_modules" in entries["skip_me"].reason
    learn = unconverted == "learn"
    assert model.cls_token.requires_grad is learn and model.norm.weight.requires_grad is learn
    assert model.emb.weight.requires_grad is learn and model.skip_me.weight.requires_grad is learn
    assert all(e.trainable is learn for e in entries.values())
    scores = sum(layer.scores.numel() for _, layer in supermask.supermask_layers(model))
    biases = 8 + 2  # bias="learned" on the converted body and head
    expected = scores + biases + (sum(e.values for e in entries.values()) if learn else 0)
    assert report.trainable_parameters == expected == sum(p.numel() for p in model.parameters() if p.requires_grad)
    text = str(model.supermask_report)
    assert text.splitlines()[-1].startswith(f"trainable params: {expected:,} (scores {scores:,}")
    assert all(name in text for name in entries)


def test_transformers_conv1d_is_converted_and_gpt2_fully_reported(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.pytorch_utils import Conv1D

    def gpt2() -> nn.Module:
        torch.manual_seed(0)
        config = GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=50, n_positions=12, bos_token_id=0,
                            eos_token_id=0)  # fmt: skip
        return GPT2LMHeadModel(config).eval()

    model = supermask.to_supermask(gpt2(), SupermaskConfig(k=0.3, bias="frozen"))
    conv1ds = [n for n, m in gpt2().named_modules() if isinstance(m, Conv1D)]
    assert sorted(model.supermask_report.converted) == sorted(conv1ds) and len(conv1ds) == 8
    layer = model.transformer.h[0].mlp.c_fc
    x = torch.randn(2, 3, 16)
    with torch.no_grad():  # Conv1D: x @ W + b, W stored (in, out); the mask is on that W
        expected = x @ (layer.base_layer.weight * layer.mask()) + layer.base_layer.bias
        assert torch.allclose(layer(x), expected, atol=1e-6)
    std = layer.base_layer.weight.abs().max().item()  # signed constant: gain / sqrt(fan_in), fan_in = 16
    assert std == pytest.approx(2**0.5 / 16**0.5)
    skipped = {e.name for e in model.supermask_report.unconverted}
    assert {"transformer.wte", "transformer.wpe", "transformer.ln_f", "lm_head"} <= skipped
    assert model.supermask_report.trainable_parameters == model.supermask_report.score_parameters
    ids = torch.randint(0, 50, (2, 6))
    with torch.no_grad():
        out = model(ids).logits
    supermask.save(model, tmp_path / "ck")
    loaded = supermask.load(tmp_path / "ck", gpt2())
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, out)
        assert torch.equal(supermask.merge(loaded)(ids).logits, out)


@pytest.mark.slow
def test_conversion_does_not_import_transformers() -> None:
    import subprocess
    import sys

    code = (
        "import sys, torch, supermask\n"
        "m = supermask.to_supermask(torch.nn.Sequential(torch.nn.Linear(3, 3)))\n"
        "print('transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: nn.Sequential(nn.Bilinear(4, 4, 8)), r"'0' \(Bilinear\): bilinear layers are not supported yet"),
        (_Tied, r"'out' \(Linear\): its weight is tied to emb.weight"),
        (lambda: nn.Linear(4, 4), r"The model is itself a Linear: .* wrap it: nn.Sequential\(model\)"),
        (lambda: nn.LSTM(4, 4), "The model is itself a LSTM, which cannot be masked: RNN/LSTM/GRU"),
        (lambda: nn.Sequential(nn.ReLU()), "It has no nn.Linear, nn.Conv1d/2d/3d"),
        (
            lambda: torch.jit.script(nn.Sequential(nn.Linear(4, 4))),
            "The model is a TorchScript module .* convert the original nn.Module",
        ),
    ],
)
def test_when_nothing_is_converted_the_error_says_why(make, says) -> None:  # type: ignore[no-untyped-def]
    model = make()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(supermask.SupermaskError, match=says):
        supermask.to_supermask(model, SupermaskConfig())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_left_dense_layers_are_named_when_they_leave_nothing() -> None:
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(supermask.SupermaskError, match=r"Left dense by first_layer_dense / last_layer_dense: \['0'\]"):
        supermask.to_supermask(model, SupermaskConfig(first_layer_dense=True))


def test_a_model_on_the_meta_device_is_refused_before_anything_changes() -> None:
    # meta tensors hold no values: the "frozen random weights" would be whatever memory to_empty() leaves
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(supermask.SupermaskError, match=r"on the meta device .*first: '0.weight'.* materialise"):
        supermask.to_supermask(model, SupermaskConfig())
    assert type(model[0]) is nn.Linear and not hasattr(model, "supermask_config")


def test_a_torchscript_submodule_is_reported_with_its_reason() -> None:
    model = nn.Sequential(torch.jit.script(nn.Sequential(nn.Linear(4, 4), nn.ReLU())), nn.Linear(4, 2))
    supermask.to_supermask(model, SupermaskConfig())
    [entry] = model.supermask_report.unconverted
    assert entry.name == "0.0" and "TorchScript module" in entry.reason and "convert the original" in entry.reason
    with pytest.raises(supermask.SupermaskError, match=r"module '0.0' \(RecursiveScriptModule\) .* TorchScript"):
        supermask.to_supermask(
            nn.Sequential(torch.jit.script(nn.Sequential(nn.Linear(4, 4))), nn.Linear(4, 2)),
            SupermaskConfig(unsupported="raise"),
        )
