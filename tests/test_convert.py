"""Conversion of any model: options, targets, errors, set_k, caching, merge."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import supermask
from supermask.core.config import SupermaskConfig
from supermask.models import create


def state_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


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


def test_invalid_config_values() -> None:
    for kwargs, text in [
        ({"k": 0}, "fraction of weights KEPT"),
        ({"k": 1.5}, "KEPT"),
        ({"method": "x"}, "edge-popup"),
        ({"weight_init": "x"}, "signed_constant"),
        ({"bias": "x"}, "zero"),
        ({"seed": -1}, "seed"),
    ]:
        with pytest.raises(supermask.SupermaskConfigError, match=text):
            SupermaskConfig(**kwargs)


def test_already_converted() -> None:
    m = nn.Sequential(nn.Linear(3, 3))
    supermask.to_supermask(m)
    with pytest.raises(supermask.SupermaskError, match="already converted"):
        supermask.to_supermask(m)


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


def test_transformer_encoder_converts_and_reports_skips() -> None:
    model = TinyEncoder()
    supermask.to_supermask(model, SupermaskConfig(k=0.5))
    report = model.supermask_report
    assert "encoder.layers.0.linear1" in report.converted
    assert "encoder.layers.0.self_attn.out_proj" in report.converted
    skipped = {name: kind for name, kind, _ in report.skipped}
    assert skipped == {
        "embed": "Embedding",
        "encoder.layers.0.self_attn": "MultiheadAttention",
        "encoder.layers.1.self_attn": "MultiheadAttention",
    }
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


def test_resnet_conversion_batchnorm_and_merge() -> None:
    model = create("cifar_resnet18", width=0.25)
    supermask.to_supermask(model, SupermaskConfig(k=0.3))
    convs = [m for m in model.modules() if isinstance(m, supermask.SupermaskLayer)]
    assert len(convs) == 21  # 20 convs (3 downsample) + fc
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(not bn.affine and bn.weight is None for bn in bns)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(n.endswith("scores") for n in trainable)
    x = torch.randn(4, 3, 16, 16)
    model.train()
    model(x)  # updates BatchNorm statistics
    model.eval()
    with torch.no_grad():
        y = model(x)
    merged = supermask.merge(model)
    assert not any(isinstance(m, supermask.SupermaskLayer) for m in merged.modules())
    with torch.no_grad():
        assert torch.equal(merged(x), y)
    conv = merged.layer1[0].conv1
    assert type(conv) is nn.Conv2d and conv.weight.requires_grad
    assert int((conv.weight != 0).sum()) == supermask.kept_count(0.3, conv.weight.numel())


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


def test_set_k_and_errors() -> None:
    m = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    cfg = SupermaskConfig(k=0.5)
    supermask.to_supermask(m, cfg)
    supermask.set_k(m, 0.3)
    assert cfg.k == 0.5  # the caller's config is not edited
    assert [r["kept"] for r in supermask.sparsity_report(m)["layers"]] == [60, 30]
    assert m.supermask_config.k == 0.3
    for bad in (0, -0.1, 1.01, "0.5", True):
        with pytest.raises(supermask.SupermaskConfigError, match="KEPT"):
            supermask.set_k(m, bad)  # type: ignore[arg-type]
    b = nn.Sequential(nn.Linear(3, 3))
    supermask.to_supermask(b, SupermaskConfig(method="bernoulli"))
    with pytest.raises(supermask.SupermaskConfigError, match="no effect"):
        supermask.set_k(b, 0.3)
    with pytest.raises(supermask.SupermaskError, match="not converted"):
        supermask.set_k(nn.Linear(2, 2), 0.3)


def test_set_k_with_scale_fan_regenerates_weights() -> None:
    m = nn.Sequential(nn.Linear(100, 4))
    supermask.to_supermask(m, SupermaskConfig(k=0.5, scale_fan=True))
    supermask.set_k(m, 0.25)
    w = m[0].base_layer.weight
    assert torch.allclose(w.abs(), torch.full_like(w, (2.0 / (100 * 0.25)) ** 0.5))


def test_eval_mask_is_cached_until_scores_or_k_change(monkeypatch: pytest.MonkeyPatch) -> None:
    import supermask.core.layers as layers

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


def test_dense_method_trains_weights_through_same_path() -> None:
    m = nn.Sequential(nn.Linear(8, 4))
    supermask.to_supermask(m, SupermaskConfig(method="dense"))
    assert m[0].scores is None and m[0].base_layer.weight.requires_grad
    x = torch.randn(3, 8)
    assert torch.allclose(m(x), F.linear(x, m[0].base_layer.weight, m[0].base_layer.bias))
    assert supermask.sparsity_report(m)["converted"]["fraction"] == 1.0


def test_lazy_module_is_reported() -> None:
    m = nn.Sequential(nn.LazyLinear(4), nn.Linear(4, 2))
    supermask.to_supermask(m)
    assert m.supermask_report.skipped[0][0] == "0"
