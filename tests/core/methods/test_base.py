"""Every registered mask method, a user's too, through one contract; then each method's own rule on a
hand-computed example (issue 13)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import supermask
from supermask.core import registry
from supermask.core.layers import SupermaskLayer
from supermask.core.methods import method_class, register_method
from supermask.errors import SupermaskConfigError
from tests.helpers.methods import METHODS, PositiveTopK, X, _user_method, net, trained


@pytest.mark.parametrize(
    ("select", "message"),
    [
        (
            lambda self, layer: torch.ones(layer.scores.shape[1:], dtype=torch.bool),
            r"select\(\) gave a torch.bool tensor of shape \(3, 3, 3\)",
        ),
        (lambda self, layer: torch.ones(layer.scores.shape, dtype=torch.int64), "torch.int64"),
        (lambda self, layer: layer.scores.detach().numpy() > 0, "gave ndarray"),
    ],
)
def test_a_mask_of_the_wrong_shape_or_type_is_refused_not_broadcast(
    select: Any, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    register_method(_user_method("wrong-mask", select))
    model = supermask.to_supermask(net(), supermask.SupermaskConfig(k=0.3, method="wrong-mask"))
    with pytest.raises(supermask.SupermaskError, match=message):
        model(X)
    for refused in (supermask.merge, supermask.sparsity_report):
        with pytest.raises(supermask.SupermaskError, match=message):
            refused(model)
        assert model.training and len(supermask.supermask_layers(model)) == 2  # left as it was


@pytest.mark.parametrize(
    ("hook", "impl", "message"),
    [
        (
            "initial_scores",
            lambda self, name, shape, fan: torch.zeros(shape[0]),
            r"initial_scores\(\) gave a torch.float32 tensor of shape \(4,\)",
        ),
        ("initial_scores", lambda self, name, shape, fan: torch.zeros(shape, dtype=torch.int64), "torch.int64"),
        ("initial_scores", lambda self, name, shape, fan: torch.full(shape, math.nan), "NaN or infinite"),
        ("initial_scores", lambda self, name, shape, fan: None, "gave NoneType"),
    ],
)
def test_initial_scores_that_cannot_work_are_refused_before_the_model_changes(
    hook: str, impl: Any, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    register_method(type("Odd", (PositiveTopK,), {"name": "odd-scores", hook: impl}))
    model = net()
    before = [type(m) for m in model.modules()]
    with pytest.raises(supermask.SupermaskError, match=message):
        supermask.to_supermask(model, supermask.SupermaskConfig(k=0.3, method="odd-scores"))
    assert [type(m) for m in model.modules()] == before


@pytest.mark.parametrize(
    ("hook", "impl", "message"),
    [
        ("surrogate", lambda self, scores: scores.sum(), r"surrogate\(\) gave shape \(\)"),
        (
            "weight_transform",
            lambda self, layer, weight, mask: weight[0],
            r"weight_transform\(\) gave shape \(3, 3, 3\)",
        ),
    ],
)
def test_a_hook_result_that_would_broadcast_is_refused(
    hook: str, impl: Any, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    register_method(type("Odd", (PositiveTopK,), {"name": "odd-hook", hook: impl}))
    model = supermask.to_supermask(net(), supermask.SupermaskConfig(k=0.3, method="odd-hook"))
    with pytest.raises(supermask.SupermaskError, match=message):
        model(X)
    model.train()
    with pytest.raises(supermask.SupermaskError, match=message):
        supermask.merge(model)
    assert model.training and len(supermask.supermask_layers(model)) == 2  # left as it was: converted, training


def test_a_mask_its_storage_cannot_hold_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    register_method(_user_method("half-mask", lambda self, layer: torch.full(layer.scores.shape, 0.5)))
    model = supermask.to_supermask(net(), supermask.SupermaskConfig(k=0.3, method="half-mask"))
    model(X)  # a float mask is a valid forward pass (0.5 * W): only 1 bit per weight cannot store it
    model.train()
    with pytest.raises(supermask.SupermaskError, match=r"values \[0.5\]\) does not survive its 1-bit storage"):
        supermask.save(model, tmp_path / "out")
    assert not (tmp_path / "out").exists() and model.training  # the model is left as it was: in training mode
    register_method(type("Extra", (PositiveTopK,), {"name": "odd-extra", "extra_state": lambda self, layers: {"a": 3}}))
    model = supermask.to_supermask(net(), supermask.SupermaskConfig(k=0.3, method="odd-extra"))
    with pytest.raises(supermask.SupermaskError, match=r"extra_state\(\) must give a dict of str to tensors"):
        supermask.save(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("method", METHODS)
def test_save_load_bit_exact_and_merge_exact(method: str, tmp_path: Path) -> None:
    model = trained(method)
    with torch.no_grad():
        out = model(X)
    supermask.save(model, tmp_path / "ck")
    loaded = supermask.load(tmp_path / "ck", net()).eval()
    with torch.no_grad():
        assert torch.equal(loaded(X), out)
        merged = supermask.merge(loaded)
        assert not any(isinstance(m, SupermaskLayer) for m in merged.modules())
        assert torch.allclose(merged(X), out, atol=1e-6, rtol=0)
    meta = json.loads((tmp_path / "ck" / "supermask.json").read_text())
    blob = (tmp_path / "ck" / meta["tensors_file"]).stat().st_size
    masks = sum(math.ceil(e["shape"][0] * math.prod(e["shape"][1:]) * model[0].method.mask_bits / 8) for e in
                meta["layers"].values())  # fmt: skip
    if model[0].method.has_scores:  # the masks at mask_bits per weight, the BatchNorm state and the header
        assert blob < masks + 4096
    else:  # learned weights are stored in full
        assert blob > 4 * (4 * 3 * 9 + 5 * 144)


@pytest.mark.parametrize("method", [m for m in METHODS if method_class(m).has_scores])
def test_straight_through_gradient_matches_autograd_on_the_reference(method: str) -> None:
    """The fast backward against autograd on transform(W) * (mask + g(s) - g(s).detach())."""
    torch.manual_seed(1)
    model = supermask.to_supermask(nn.Sequential(nn.Linear(12, 7)), supermask.SupermaskConfig(k=0.4, method=method))
    layer = model[0]
    with torch.no_grad():
        layer.scores.normal_()  # scores of both signs (some methods start all positive)
    layer.eval()  # a deterministic mask, also for the stochastic methods
    mask = layer.mask()
    x, r = torch.randn(5, 12), torch.randn(5, 7)
    weight = layer.base_layer.weight
    out = F.linear(x, layer.method.effective_weight(layer, weight, layer.scores, mask))
    (out * r).sum().backward()
    s = layer.scores.detach().clone().requires_grad_(True)
    g = layer.method.surrogate(s)
    reference = layer.method.weight_transform(layer, weight, mask) * (mask + (g - g.detach()))
    ref_out = F.linear(x, reference)
    (ref_out * r).sum().backward()
    assert torch.allclose(out, ref_out, atol=1e-6)
    assert layer.scores.grad is not None and torch.allclose(layer.scores.grad, s.grad, atol=1e-6)
    assert layer.base_layer.weight.grad is None  # the weights stay frozen


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_compile_equals_eager(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = trained(method, steps=2)
    with torch.no_grad():
        eager = model(X)
        assert torch.equal(torch.compile(model, backend="aot_eager")(X), eager)
    # the accelerator path (the selection traced into the graph), forced on the CPU
    monkeypatch.setattr(SupermaskLayer, "traces_selection", lambda self: self.method.traceable(self))
    torch._dynamo.reset()
    with torch.no_grad():
        assert torch.allclose(torch.compile(model, backend="aot_eager")(X), eager, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_set_k(method: str) -> None:
    model = supermask.to_supermask(net(), supermask.SupermaskConfig(k=0.3, method=method))
    if not method_class(method).uses_k:
        with pytest.raises(SupermaskConfigError, match="k has no effect"):
            supermask.set_k(model, 0.5)
        return
    supermask.set_k(model, 0.5)
    assert all(layer.k == 0.5 for _, layer in supermask.supermask_layers(model))
    if method_class(method).exact_k:
        report = supermask.sparsity_report(model)
        assert abs(report["converted"]["fraction"] - 0.5) < 0.01


@pytest.mark.parametrize("method", ["biprop", "signed-supermask", "threshold", "bernoulli", "positive-top-k"])
def test_learns_out_of_the_box_on_the_embedded_data(method: str, tmp_path: Path) -> None:
    from supermask.runconfig import load_run_config
    from supermask.train import train

    cfg = load_run_config(None, [f"supermask.method={method}", f"train.out_dir={tmp_path}", "train.epochs=8"])
    assert train(cfg, log=lambda *_: None)["accuracy"] > 0.8


def test_a_setting_the_method_does_not_use_is_named_not_dropped_silently(tmp_path: Path) -> None:
    from supermask.runconfig import load_run_config
    from supermask.train import train

    for method in METHODS:
        cfg = load_run_config(None, [f"supermask.method={method}", "supermask.k=0.3"])
        assert ("supermask.k" in cfg.ignored_settings) is (not method_class(method).uses_k)
    config = tmp_path / "c.yaml"
    config.write_text("supermask:\n  score_init: uniform\n  score_init_value: 2.0\n")
    cfg = load_run_config(
        config,
        [
            "supermask.method=threshold",
            "supermask.k=0.3",
            "train.epochs=1",
            "train.max_steps=1",
            f"train.out_dir={tmp_path}",
        ],
    )
    assert cfg.ignored_settings == {
        "supermask.k": 0.3,
        "supermask.score_init": "uniform",
        "supermask.score_init_value": 2.0,
    }
    assert load_run_config(
        None, ["supermask.method=edge-popup", "supermask.score_init_value=2.0"]
    ).ignored_settings == {
        "supermask.score_init_value": 2.0  # only uniform and constant score inits read it
    }
    # the config's own rule too: over pretrained weights nothing is drawn, so the fan and gain do nothing
    assert load_run_config(
        None, ["supermask.weight_init=pretrained", "supermask.fan_mode=fan_avg", "supermask.nonlinearity=tanh"]
    ).ignored_settings == {"supermask.fan_mode": "fan_avg", "supermask.nonlinearity": "tanh"}
    lines: list[str] = []
    result = train(cfg, log=lines.append)
    assert any("does not use supermask.k=0.3, supermask.score_init=uniform" in line for line in lines)
    assert result["ignored_settings"]["supermask.k"] == 0.3


def test_a_layer_whose_outputs_are_starved_is_flagged_and_the_run_warns(tmp_path: Path) -> None:
    """A global top-k at a small k can leave the layer of largest fan almost empty (Conv4 at k = 0.05:
    1 of 2,097,152 classifier weights): the layer is named before training, never silently trained."""
    from supermask.core.inspection import silent_outputs
    from supermask.models import create
    from supermask.runconfig import load_run_config
    from supermask.train import train

    def conv4(method: str) -> nn.Module:
        model = create("conv4", num_classes=10, in_channels=3, image_size=32)
        return supermask.to_supermask(
            model, supermask.SupermaskConfig(method=method, k=0.05, seed=0)
        )  # scale_fan or not

    assert [(r["name"], r["kept"], r["silent"], r["outputs"]) for r in silent_outputs(conv4("edge-popup-global"))] == [
        ("classifier.1", 1, 255, 256)
    ]
    assert silent_outputs(conv4("edge-popup")) == []  # per layer: every layer keeps 5%
    logged: list[str] = []
    cfg = load_run_config(None, [f"train.out_dir={tmp_path}", "train.epochs=1", "supermask.method=edge-popup-global",
                                 "supermask.k=0.05"])  # fmt: skip
    train(cfg, log=logged.append)
    warnings = [m for m in logged if m.startswith("warning: ")]
    assert warnings and "outputs have no kept weight and carry no signal" in warnings[0]
