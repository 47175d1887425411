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
from torch import Tensor, nn

import supermask
from supermask.core import registry
from supermask.core.init import generate_weight
from supermask.core.layers import SupermaskLayer
from supermask.core.masks import topk_mask
from supermask.core.methods import MaskMethod, method_class, method_names, register_method
from supermask.errors import SupermaskConfigError


# --- a user's own method, registered in a few lines (the README shows the same) --------------------------
@register_method
class PositiveTopK(MaskMethod):
    """Keep the top-k of the score itself (not of |score|): a weight with a negative score is never kept."""

    name = "positive-top-k"
    summary = "scores; top-k of s per layer; d s = d w_eff * w"

    def select(self, layer: SupermaskLayer) -> Tensor:
        scores = layer.scores.detach()
        return topk_mask(scores.reshape(-1), layer.kept()).reshape(scores.shape)

    def surrogate(self, scores: Tensor) -> Tensor:
        return scores


METHODS = method_names()


def net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


def trained(method: str, steps: int = 4) -> nn.Module:
    torch.manual_seed(0)
    model = supermask.to_supermask(net(), supermask.SupermaskConfig(k=0.3, method=method, seed=2))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.2, momentum=0.9)
    x = torch.randn(8, 3, 8, 8)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), torch.arange(8) % 5).backward()
        opt.step()
    return model.eval()


X = torch.randn(3, 3, 8, 8)


def test_the_user_method_is_registered() -> None:
    assert "positive-top-k" in METHODS and method_class("positive-top-k") is PositiveTopK
    with pytest.raises(SupermaskConfigError, match="already registered"):

        @register_method
        class Again(MaskMethod):
            name = "edge-popup"


def test_a_method_class_that_cannot_work_is_refused_when_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # nothing registered here outlives the test
    with pytest.raises(SupermaskConfigError, match="must implement select"):

        @register_method
        class NoSelect(MaskMethod):
            name = "no-select"

    for bad in ("two words", "a,b", "", "-lead"):
        with pytest.raises(SupermaskConfigError, match="name"):
            register_method(type("Bad", (PositiveTopK,), {"name": bad}))
    assert "no-select" not in method_names()


def _user_method(name: str, select: Any) -> type[MaskMethod]:
    return type(name, (PositiveTopK,), {"name": name, "select": select})


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


def test_a_checkpoint_of_a_method_not_registered_here_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registered = dict(registry._REGISTRY)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registered))
    register_method(type("Mine", (PositiveTopK,), {"name": "my-top-k"}))
    supermask.save(supermask.to_supermask(net(), supermask.SupermaskConfig(k=0.3, method="my-top-k")), tmp_path)
    monkeypatch.setattr(registry, "_REGISTRY", registered)  # a new process that did not import the method
    with pytest.raises(supermask.CheckpointError, match="method 'my-top-k', which is not registered in this process"):
        supermask.load(tmp_path, net())


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


# --- each method's rule on a hand-computed example ------------------------------------------------------


def one_layer(method: str, weight: list[list[float]], scores: list[list[float]], **cfg: Any) -> Any:
    lin = nn.Linear(2, 2, bias=False)
    model = supermask.to_supermask(nn.Sequential(lin), supermask.SupermaskConfig(method=method, **cfg))
    layer = model[0].eval()
    with torch.no_grad():
        layer.base_layer.weight.copy_(torch.tensor(weight))
        layer.scores.copy_(torch.tensor(scores))
    return layer


def test_biprop_alpha_and_binary_weights() -> None:
    layer = one_layer("biprop", [[1.0, -2.0], [3.0, -4.0]], [[0.1, -0.2], [0.9, -0.5]], k=0.5)
    assert layer.mask().tolist() == [[False, False], [True, True]]  # top-2 of |score|
    alpha = (3.0 + 4.0) / 2  # mean |W| over the kept weights
    assert layer.weight.tolist() == [[0.0, -0.0], [alpha, -alpha]]
    with pytest.raises(SupermaskConfigError, match="scope='row'.*choose one of: layer, global"):
        supermask.SupermaskConfig(method="biprop", options={"scope": "row"})


def test_biprop_global_scope_keeps_one_per_layer() -> None:
    model = supermask.to_supermask(
        nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 2)),
        supermask.SupermaskConfig(method="biprop", k=0.1, options={"scope": "global"}),
    )
    rows = supermask.sparsity_report(model)
    assert rows["converted"]["kept"] == round(0.1 * 120) and all(r["kept"] >= 1 for r in rows["layers"])


def test_signed_supermask_ternary_rule_and_storage(tmp_path: Path) -> None:
    layer = one_layer("signed-supermask", [[1.0, 2.0], [3.0, 4.0]], [[0.5, -0.5], [0.39, -0.41]])
    assert layer.mask().tolist() == [[1.0, -1.0], [0.0, -1.0]]  # tau = 0.4
    assert layer.weight.tolist() == [[1.0, -2.0], [0.0, -4.0]]
    assert layer.method.mask_bits == 2
    packed = layer.method.pack(layer.mask())
    assert packed.numel() == 1 and torch.equal(layer.method.unpack(packed, (2, 2)), layer.mask())
    with pytest.raises(SupermaskConfigError, match="threshold=-1 .* must be > 0"):
        supermask.SupermaskConfig(method="signed-supermask", options={"threshold": -1})
    with pytest.raises(SupermaskConfigError, match="has no option"):
        supermask.SupermaskConfig(method="signed-supermask", options={"tau": 0.3})


def test_threshold_rule_and_piggyback_start() -> None:
    layer = one_layer("threshold", [[1.0, 2.0], [3.0, 4.0]], [[0.006, 0.005], [0.004, -1.0]])
    assert layer.mask().tolist() == [[True, False], [False, False]]  # score > 5e-3
    fresh = supermask.to_supermask(nn.Sequential(nn.Linear(3, 3)), supermask.SupermaskConfig(method="threshold"))
    assert bool((fresh[0].scores == 1e-2).all()) and bool(fresh[0].mask().all())  # every weight starts kept
    with pytest.raises(SupermaskConfigError, match="option threshold='x' of method 'threshold' must be a float"):
        supermask.SupermaskConfig(method="threshold", options={"threshold": "x"})


def test_methods_without_k_ignore_it_in_the_experiment_identity() -> None:
    for method in METHODS:
        a = supermask.SupermaskConfig(method=method, k=0.3).experiment_dict()
        b = supermask.SupermaskConfig(method=method, k=0.5).experiment_dict()
        assert (a == b) is (not method_class(method).uses_k)


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


@pytest.mark.parametrize(
    ("items", "message"),
    [  # a run that cannot follow the method's schedule stops before its first step, with the fix
        (
            ["supermask.method=gem-miner", "train.epochs=2"],
            "never prunes.*supermask.options.period=1 \\(it prunes to k by epoch 1",
        ),
        (
            ["supermask.method=gem-miner", "supermask.k=0.1", "supermask.options.prune_rate=0.2", "train.epochs=10"],
            r"leaves 0\.64 of each layer after its last pruning in 10 epochs, above k=0\.1",
        ),
        (["supermask.method=iterand", "train.epochs=1", "train.max_steps=5"], "has 5: it would never re-draw one"),
    ],
)
def test_a_schedule_the_run_cannot_follow_is_refused(items: list[str], message: str, tmp_path: Path) -> None:
    from supermask.runconfig import load_run_config
    from supermask.train import train

    cfg = load_run_config(None, [*items, f"train.out_dir={tmp_path}"])
    with pytest.raises(SupermaskConfigError, match=message):
        train(cfg, log=lambda *_: None)
    assert not list(tmp_path.rglob("*.json")) and not list(tmp_path.rglob("*.pt"))  # nothing written


def test_gem_miner_with_the_suggested_period_reaches_k_and_trains_after(tmp_path: Path) -> None:
    from supermask.runconfig import load_run_config
    from supermask.train import train

    items = ["supermask.method=gem-miner", "supermask.k=0.1", "supermask.options.period=1", "train.epochs=2"]
    result = train(
        load_run_config(None, [*items, "train.max_steps=3", f"train.out_dir={tmp_path}"]), log=lambda *_: None
    )
    assert result["kept_fraction"] <= 0.1 + 1e-3  # pruned to k at the end of epoch 1 (the 0.5 threshold may keep fewer)


def test_gem_miner_schedule_clamp_penalty_and_permanent_pruning(tmp_path: Path) -> None:
    model = supermask.to_supermask(
        nn.Sequential(nn.Linear(10, 10)), supermask.SupermaskConfig(method="gem-miner", k=0.1)
    )
    layer, method = model[0], model[0].method
    # density_t = max(k, (1 - p)^(epoch // 5)), p = 1 - k^(1/3) for 20 epochs: k reached at epoch 15, so the
    # last 5 epochs train the final mask
    assert [round(method.density(e, 20), 4) for e in (5, 10, 15, 20)] == [0.4642, 0.2154, 0.1, 0.1]
    assert bool(((layer.scores >= 0) & (layer.scores <= 1)).all())  # U[0, 1]
    with torch.no_grad():
        layer.scores.copy_(torch.arange(100.0).reshape(10, 10) / 100)  # score i / 100 at flat index i
    layer.scores.grad = torch.zeros(10, 10)
    method.before_step([layer])
    assert torch.allclose(layer.scores.grad, 2e-4 * layer.scores.detach())  # d(l2 ||s||^2) = 2 l2 s
    with torch.no_grad():
        layer.scores[0, 0] = 1.7
        layer.scores[0, 1] = -0.3
    method.after_step([layer])
    assert layer.scores[0, 0] == 1.0 and layer.scores[0, 1] == 0.0  # clamped to [0, 1]
    method.on_epoch_end([layer], 4, 20)
    assert not layer.pruned.any()  # only every 5th epoch
    method.on_epoch_end([layer], 5, 20)
    flat = layer.pruned.reshape(-1)
    # density 0.4642: 46 stay, the 54 lowest scores go (index 0 was clamped to 1.0, index 1 to 0.0): 1..54
    assert int(flat.sum()) == 100 - 46 and bool(flat[1:55].all()) and not flat[0] and not flat[55:].any()
    mask = layer.eval().mask()
    assert int(mask.sum()) == 46 and not bool((mask & layer.pruned).any())  # s > 0.5 and not pruned
    supermask.save(model, tmp_path / "ck")
    loaded = supermask.load(tmp_path / "ck", nn.Sequential(nn.Linear(10, 10)))
    assert torch.equal(loaded[0].pruned, layer.pruned)


def test_gem_miner_trains_from_the_cli_to_at_most_k(tmp_path: Path) -> None:
    from supermask.runconfig import load_run_config
    from supermask.train import train

    items = ["supermask.method=gem-miner", "supermask.k=0.3", "supermask.options={period: 4}"]
    result = train(load_run_config(None, [*items, f"train.out_dir={tmp_path}"]), log=lambda *_: None)
    assert result["accuracy"] > 0.7 and result["kept_fraction"] <= 0.3 + 1e-9  # chance: 0.1


def _iterand(seed: int = 4, n: int = 200, rate: float = 0.1) -> nn.Module:
    cfg = supermask.SupermaskConfig(method="iterand", k=0.5, seed=seed, options={"rerand_freq": 1, "rate": rate})
    return supermask.to_supermask(nn.Sequential(nn.Linear(n, n)), cfg)


def test_iterand_redraws_pruned_weights_at_its_rate_and_deterministically() -> None:
    a, b = _iterand(), _iterand()
    before = a[0].base_layer.weight.detach().clone()
    mask = a[0].mask().clone()
    a[0].method.after_step([a[0]])  # rerand_freq = 1: round 1 now
    changed = a[0].base_layer.weight != before
    assert not bool((changed & mask).any())  # kept weights never change
    redrawn = a[0].iterand_round == 1
    share = float(redrawn.sum()) / float((~mask).sum())
    assert 0.08 < share < 0.12  # rate 0.1 of the pruned weights
    assert bool((redrawn & mask).sum() == 0) and bool(changed.le(redrawn).all())
    b[0].method.after_step([b[0]])
    assert torch.equal(a[0].base_layer.weight, b[0].base_layer.weight)  # a pure function of the seed
    assert not torch.equal(_iterand(seed=5)[0].base_layer.weight, before)


def test_set_k_with_scale_fan_keeps_iterand_redraws_and_save_load_exact(tmp_path: Path) -> None:
    """With scale_fan the weights depend on k: set_k regenerates them, re-drawn ones included (it used to
    drop IteRand's re-draws, and the checkpoint saved after it refused to load: checksum mismatch)."""
    model = supermask.to_supermask(
        nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)),
        supermask.SupermaskConfig(method="iterand", k=0.5, scale_fan=True, options={"rerand_freq": 2, "rate": 0.5}),
    )
    layers = [layer for _, layer in supermask.supermask_layers(model)]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x = torch.randn(8, 16)
    for _ in range(4):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
        layers[0].method.after_step(layers)
    assert int(layers[0].iterand_round.max()) == 2  # two rounds re-drew weights
    supermask.set_k(model, 0.25)
    for layer in layers:  # every weight at the new scale: round r's draw where r re-drew it, else the seed's
        fresh = generate_weight(
            layer.layer_name, tuple(layer.weight.shape), model.supermask_config, 0.25, layer.fan_shape()
        )
        for r in (1, 2):
            redraw = generate_weight(
                layer.layer_name,
                tuple(layer.weight.shape),
                model.supermask_config,
                0.25,
                layer.fan_shape(),
                salt=f"iterand-{r}",
            )
            fresh = torch.where(layer.iterand_round == r, redraw, fresh)
        assert torch.equal(layer.base_layer.weight, fresh)
    model.eval()
    supermask.save(model, tmp_path / "ck")
    loaded = supermask.load(tmp_path / "ck", nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))).eval()
    assert torch.equal(loaded(x), model(x))


def test_scale_fan_with_a_method_whose_layers_do_not_keep_k_is_refused_by_to_supermask_too() -> None:
    for method, options in [("edge-popup-global", {}), ("biprop", {"scope": "global"}), ("gem-miner", {})]:
        cfg = supermask.SupermaskConfig(method=method, options=options, scale_fan=True)
        model = nn.Sequential(nn.Linear(8, 8))
        before = model[0].weight.clone()
        with pytest.raises(SupermaskConfigError, match="Use supermask.scale_fan=false"):
            supermask.to_supermask(model, cfg)
        assert torch.equal(model[0].weight, before) and not supermask.supermask_layers(model)  # unchanged


def test_iterand_checkpoint_rebuilds_the_weights_and_stays_compact(tmp_path: Path) -> None:
    model = _iterand(n=300)
    layer = model[0]
    g = torch.Generator().manual_seed(0)
    for _ in range(130):  # 130 rounds (100 CIFAR epochs at 391 steps, every 300 steps), masks changing
        with torch.no_grad():
            layer.scores.add_(torch.randn(layer.scores.shape, generator=g) * 0.3 * layer.scores.abs().mean())
        layer.method.after_step([layer])
    x = torch.randn(4, 300)
    with torch.no_grad():
        out = model.eval()(x)
    supermask.save(model, tmp_path / "ck")
    loaded = supermask.load(tmp_path / "ck", nn.Sequential(nn.Linear(300, 300))).eval()
    assert torch.equal(loaded[0].base_layer.weight, layer.base_layer.weight)
    with torch.no_grad():
        assert torch.equal(loaded(x), out)
    size = sum(f.stat().st_size for f in (tmp_path / "ck").iterdir())
    fp32 = 4 * (300 * 300 + 300)
    assert size <= fp32 / 4, (size, fp32)


def _kernel_ops(fn: Any) -> int:
    """Operations dispatched by ``fn()`` that compute (views and aliases excluded: they launch nothing)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    count = [0]

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            if not any(r.alias_info is not None for r in func._schema.returns):
                count[0] += 1
            return func(*args, **(kwargs or {}))

    with Counter():
        fn()
    return count[0]


@pytest.mark.parametrize("method", ["edge-popup", "biprop", "iterand"])
def test_whole_model_selection_costs_a_constant_number_of_operations(method: str) -> None:
    """The accelerator path (forced on the CPU): one selection for all layers, the same number of tensor
    operations for 4 layers as for 20, and exactly the per-layer masks, ties included."""
    from supermask.core.methods.edge_popup import SegmentedTopK

    counts = []
    for depth in (4, 20):
        model = nn.Sequential(*[nn.Linear(9 + i, 10 + i) for i in range(depth)])
        supermask.to_supermask(model, supermask.SupermaskConfig(k=0.3, method=method))
        layers = [layer for _, layer in supermask.supermask_layers(model)]
        with torch.no_grad():
            for i, layer in enumerate(layers):  # integer scores: many ties
                layer.scores.copy_(torch.randint(-3, 4, layer.scores.shape, generator=torch.Generator().manual_seed(i)))
        group = SegmentedTopK(layers)
        group.compute()  # the cached pattern is made once
        counts.append(_kernel_ops(group.compute))
        masks = group.compute()
        for layer in layers:
            expected = topk_mask(layer.scores.detach().abs().reshape(-1), layer.kept(), sync_free=True)
            assert torch.equal(masks[id(layer)].reshape(-1), expected)
    assert counts[0] == counts[1] <= 10, counts


def test_biprop_with_learned_batchnorm_trains_and_reloads(tmp_path: Path) -> None:
    """The paper's "+BN" variant: biprop's binary weights with BatchNorm's affine parameters learned."""
    torch.manual_seed(0)
    model = supermask.to_supermask(net(), supermask.SupermaskConfig(method="biprop", k=0.3, batchnorm="learned"))
    bn = model[1]
    assert bn.affine and bn.weight.requires_grad and bn.bias.requires_grad
    before = bn.weight.detach().clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.2, momentum=0.9)
    x = torch.randn(8, 3, 8, 8)
    model.train()
    for _ in range(4):
        opt.zero_grad()
        F.cross_entropy(model(x), torch.arange(8) % 5).backward()
        opt.step()
    assert not torch.equal(bn.weight, before)  # the affine parameters trained alongside the scores
    model.eval()
    with torch.no_grad():
        out = model(X)
    supermask.save(model, tmp_path / "ck")
    with torch.no_grad():
        assert torch.equal(supermask.load(tmp_path / "ck", net()).eval()(X), out)


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
