"""Compact checkpoints: bit-exact reloads, size, and every bad input."""

from __future__ import annotations

import copy
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

import supermask
from supermask.core import registry
from supermask.core.config import SupermaskConfig
from supermask.core.methods import register_method
from supermask.models import create
from tests.helpers.checkpoint import fresh
from tests.helpers.methods import PositiveTopK, net
from tests.helpers.models import mlp


def trained(model: nn.Module, cfg: SupermaskConfig, x: torch.Tensor, steps: int = 3) -> nn.Module:
    supermask.to_supermask(model, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.5, momentum=0.9)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model(x).logsumexp(1).mean().backward()
        opt.step()
    model.eval()
    return model


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    supermask.to_supermask(model, SupermaskConfig(seed=1))
    return supermask.save(model, tmp_path / "ck")


def assert_load_fails(path: Path, model: nn.Module, match: str) -> None:
    before = copy.deepcopy(model)
    with pytest.raises(supermask.CheckpointError, match=match):
        supermask.load(path, model)
    assert str(model) == str(before)  # never half-converted
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), before.state_dict().values()))


def tensors_file(path: Path) -> Path:
    return path / json.loads((path / "supermask.json").read_text())["tensors_file"]


def edit_meta(path: Path, rehash: bool = False, **changes: object) -> None:
    """Edit supermask.json; ``rehash``: also recompute its content hash, as a deliberate forger would."""
    from supermask.core.checkpoint import content_hash

    meta = json.loads((path / "supermask.json").read_text())
    for key, value in changes.items():
        target = meta
        *parents, last = key.split(".", 1) if key.startswith("config.") else [key]
        for part in parents:
            target = target[part]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value
    if rehash:
        meta["content_sha256"] = content_hash(meta)
    (path / "supermask.json").write_text(json.dumps(meta))


DELETE = object()


def _outputs(path: Path, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return supermask.load(path, fresh()).eval()(x)


def _save_and_die_at(n: int, model: nn.Module, path: Path) -> None:
    """In a forked child: save, dying (os._exit: no cleanup) at the n-th file system operation."""

    import supermask.core.checkpoint as ck
    import supermask.fileio as fileio

    count = [0]

    def dying(real):  # type: ignore[no-untyped-def]
        def op(*args, **kwargs):  # type: ignore[no-untyped-def]
            count[0] += 1
            if count[0] == n:
                os._exit(9)
            return real(*args, **kwargs)

        return op

    fileio.os.replace = dying(os.replace)  # type: ignore[attr-defined]
    fileio.os.fsync = dying(os.fsync)  # type: ignore[attr-defined]
    fileio._open_new = dying(fileio._open_new)
    Path.unlink = dying(Path.unlink)  # type: ignore[method-assign]
    try:
        ck.save(model, path)
    finally:
        os._exit(0)


@pytest.mark.parametrize("method", ["edge-popup", "edge-popup-global", "bernoulli", "dense"])
def test_save_load_bit_exact(tmp_path: Path, method: str) -> None:
    x = torch.randn(8, 3, 16, 16)
    model = trained(create("cifar_resnet18", width=0.25), SupermaskConfig(k=0.3, method=method, seed=5), x)
    with torch.no_grad():
        y = model(x)
    supermask.save(model, tmp_path / "ck")
    loaded = supermask.load(tmp_path / "ck", create("cifar_resnet18", width=0.25))
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), y)
    assert loaded.supermask_config.method == method


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("method", ["edge-popup", "biprop", "iterand"])
def test_a_model_in_another_precision_reloads_as_it_ran(tmp_path: Path, dtype: torch.dtype, method: str) -> None:
    """Half-precision weights are the random weights rounded: a checkpoint of such a model used to be refused
    at load as an edited seed (its checksum was of the rounded weights, the check of the unrounded ones)."""

    def net(d: torch.dtype = dtype) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 5)).to(d)

    x = torch.randn(4, 3, 8, 8, dtype=dtype)
    options = {"rerand_freq": 1} if method == "iterand" else {}
    model = trained(net(), SupermaskConfig(k=0.3, method=method, seed=3, options=options), x)
    with torch.no_grad():
        y = model(x)
    supermask.save(model, tmp_path / "ck")
    same = supermask.load(tmp_path / "ck", net()).eval()
    with torch.no_grad():
        assert torch.equal(same(x), y)
    wider = supermask.load(tmp_path / "ck", net(torch.float32))  # the values it ran with, in float32
    for (_, ran), (_, now) in zip(supermask.supermask_layers(model), supermask.supermask_layers(wider)):
        assert torch.equal(ran.base_layer.weight.float(), now.base_layer.weight)


def test_include_scores_restores_training_state(tmp_path: Path) -> None:
    x = torch.randn(4, 20)
    model = trained(nn.Sequential(nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, 3)), SupermaskConfig(), x)
    supermask.save(model, tmp_path / "ck", include_scores=True)
    loaded = supermask.load(tmp_path / "ck", nn.Sequential(nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, 3)))
    assert torch.equal(loaded[0].scores, model[0].scores)


def test_checkpoint_is_small(tmp_path: Path) -> None:
    model = create("fc", image_size=28, in_channels=1)
    fp32 = tmp_path / "state.pt"
    torch.save(model.state_dict(), fp32)
    supermask.to_supermask(model, SupermaskConfig(k=0.5))
    supermask.save(model, tmp_path / "ck")
    size = sum(f.stat().st_size for f in (tmp_path / "ck").iterdir())
    assert size <= fp32.stat().st_size / 30, (size, fp32.stat().st_size)
    conv = create("conv4")
    torch.save(conv.state_dict(), fp32)
    supermask.to_supermask(conv, SupermaskConfig(k=0.5))
    supermask.save(conv, tmp_path / "ck4")
    size = sum(f.stat().st_size for f in (tmp_path / "ck4").iterdir())
    assert size <= fp32.stat().st_size / 30


def test_corrupt_and_truncated(saved: Path) -> None:
    blob = tensors_file(saved)
    data = bytearray(blob.read_bytes())
    data[-3] ^= 0xFF
    blob.write_bytes(bytes(data))
    assert_load_fails(saved, fresh(), "is corrupt: its sha256")
    blob.write_bytes(bytes(data[: len(data) // 2]))
    assert_load_fails(saved, fresh(), "bytes, the checkpoint recorded")
    blob.unlink()
    assert_load_fails(saved, fresh(), "missing")


def test_a_far_larger_tensors_file_is_refused_before_reading(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = tensors_file(saved)
    with open(blob, "r+b") as f:
        f.truncate(50 << 30)  # sparse: 50 GiB recorded as a few KB
    real = Path.read_bytes

    def guarded(self: Path) -> bytes:
        assert self.suffix != ".safetensors", f"read {self}"
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", guarded)
    assert_load_fails(saved, fresh(), "bytes, the checkpoint recorded")


def test_bad_json_and_missing(saved: Path, tmp_path: Path) -> None:
    assert_load_fails(tmp_path / "nothing", fresh(), "supermask.json is missing")
    (saved / "supermask.json").write_text("{not json")
    assert_load_fails(saved, fresh(), "not valid JSON")
    (saved / "supermask.json").write_text("[1, 2]")
    assert_load_fails(saved, fresh(), "not a supermask checkpoint")
    (saved / "supermask.json").write_bytes(b"\xff\xfe{")
    assert_load_fails(saved, fresh(), "not valid JSON")


@pytest.mark.parametrize("version", [0, 1, 99, "2", True, None])
def test_other_format_versions(saved: Path, version: object) -> None:
    edit_meta(saved, rehash=True, format_version=version)
    assert_load_fails(saved, fresh(), "format version")


def test_missing_keys_are_named(saved: Path) -> None:
    original = (saved / "supermask.json").read_bytes()
    for key in ("layers", "config", "tensors_bytes", "metadata", "has_scores"):
        (saved / "supermask.json").write_bytes(original)
        edit_meta(saved, rehash=True, **{key: DELETE})
        assert_load_fails(saved, fresh(), f"has no '{key}'")


def test_wrong_seed(saved: Path) -> None:
    edit_meta(saved, **{"config.seed": 2})
    assert_load_fails(saved, fresh(), "was edited")
    edit_meta(saved, rehash=True, **{"config.seed": 2})
    assert_load_fails(saved, fresh(), "do not match the checksum")


@pytest.mark.parametrize(
    "edit",
    [
        {"config.k": 0.3},
        {"config.k": 0.7},
        {"config.method": "bernoulli"},
        {"config.method": "dense"},
        {"config.weight_init": "kaiming_normal"},
        {"config.scale_fan": True},
        {"config.nonlinearity": "tanh"},
        {"config.fan_mode": "fan_out"},
        {"config.batchnorm": "learned"},
        {"config.bias": "learned"},
        {"left_dense": ["0"]},
        {"has_scores": True},
    ],
    ids=lambda e: "-".join(f"{k}={v}" for k, v in e.items()),
)
def test_every_network_edit_is_refused(saved: Path, edit: dict[str, object]) -> None:
    x = torch.randn(2, 3, 8, 8)
    reference = supermask.load(saved, fresh()).eval()
    edit_meta(saved, **edit)
    assert_load_fails(saved, fresh(), "was edited")
    edit_meta(saved, rehash=True, **edit)  # even re-hashed: a different network never loads
    try:
        model = supermask.load(saved, fresh()).eval()
    except supermask.CheckpointError:
        return
    with torch.no_grad():  # it loaded: then it must be the very same network
        assert torch.equal(model(x), reference(x)), edit


def test_edited_layer_shape_and_kept_count(saved: Path) -> None:
    meta = json.loads((saved / "supermask.json").read_text())
    layers = meta["layers"]
    layers["0"]["kept"] += 1
    edit_meta(saved, rehash=True, layers=layers)
    assert_load_fails(saved, fresh(), "kept count")
    layers["0"]["kept"] -= 1
    layers["0"]["shape"] = [4, 3, 3, 2]
    edit_meta(saved, rehash=True, layers=layers)
    assert_load_fails(saved, fresh(), "wrong architecture")


def test_wrong_architecture(saved: Path) -> None:
    assert_load_fails(
        saved,
        nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.Flatten(), nn.Linear(5 * 36, 2)),
        "wrong architecture",
    )
    assert_load_fails(saved, nn.Sequential(nn.Linear(3, 3)), "wrong architecture")


def test_a_wrapper_prefix_between_checkpoint_and_model_is_named(tmp_path: Path) -> None:
    def net() -> nn.Module:
        return nn.Sequential(nn.Linear(4, 3))

    wrapped = nn.DataParallel(net())  # names "module.0", as DistributedDataParallel's; torch.compile: "_orig_mod.0"
    supermask.save(supermask.to_supermask(wrapped, SupermaskConfig()), tmp_path / "wrapped")
    with pytest.raises(supermask.CheckpointError, match=r"it has '0': the checkpoint was saved from a model wrapped"):
        supermask.load(tmp_path / "wrapped", net())
    supermask.load(tmp_path / "wrapped", nn.DataParallel(net()))  # into the same wrapper: loads
    supermask.save(supermask.to_supermask(net(), SupermaskConfig()), tmp_path / "plain")
    with pytest.raises(supermask.CheckpointError, match=r"it has 'module.0': this model is wrapped"):
        supermask.load(tmp_path / "plain", nn.DataParallel(net()))


def test_load_needs_unconverted_model(saved: Path) -> None:
    m = fresh()
    supermask.to_supermask(m)
    with pytest.raises(supermask.CheckpointError, match="unconverted"):
        supermask.load(saved, m)


def test_loading_never_unpickles(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("unpickling during load")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    supermask.load(saved, fresh())
    assert {p.name for p in saved.iterdir()} == {"supermask.json", tensors_file(saved).name}


def test_overwriting_is_atomic_when_killed_at_any_write(tmp_path: Path) -> None:
    """A child process saves over a checkpoint and dies (os._exit: no cleanup) at its n-th file system
    operation, for every n: the directory always loads as the old or the new checkpoint."""

    x = torch.randn(2, 3, 8, 8)
    old_model = supermask.to_supermask(fresh(), SupermaskConfig(seed=1))
    new_model = supermask.to_supermask(fresh(), SupermaskConfig(seed=2, k=0.3))
    path = tmp_path / "ck"
    outputs = {}
    for label, model in (("old", old_model), ("new", new_model)):
        supermask.save(model, tmp_path / label)
        outputs[label] = _outputs(tmp_path / label, x)
    n = 0
    while True:
        n += 1
        supermask.save(old_model, path)
        pid = os.fork()
        if pid == 0:
            _save_and_die_at(n, new_model, path)
        _, status = os.waitpid(pid, 0)
        got = _outputs(path, x)
        assert torch.equal(got, outputs["old"]) or torch.equal(got, outputs["new"]), n
        if os.waitstatus_to_exitcode(status) == 0:  # the save ran to its end: every write point was tried
            assert torch.equal(got, outputs["new"])
            break
    assert n > 5
    supermask.save(new_model, path)  # the next save cleans what a killed one left
    assert {p.name for p in path.iterdir()} == {"supermask.json", tensors_file(path).name}


def test_load_generates_each_weight_once_and_no_initial_scores(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import supermask.core.checkpoint as ck
    from supermask.core.methods.base import MaskMethod

    calls = {"weights": 0, "scores": 0}
    real_weight = ck.generate_weight

    def count_weight(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["weights"] += 1
        return real_weight(*args, **kwargs)

    def no_scores(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["scores"] += 1
        raise AssertionError("initial scores drawn while loading masks")

    monkeypatch.setattr(ck, "generate_weight", count_weight)
    monkeypatch.setattr(MaskMethod, "initial_scores", no_scores)
    supermask.load(saved, fresh())
    assert calls == {"weights": 2, "scores": 0}  # two converted layers, each generated once


def test_load_rebuilds_each_layers_scores_once_and_every_model_owns_its_own(
    saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dry run's rebuilt scores become the model's (no second set, no copy), yet two loads of one
    checkpoint share nothing: training one leaves the other's scores and masks as saved."""
    from supermask.core.methods.edge_popup import EdgePopup

    calls = []
    real = EdgePopup.scores_for

    def counted(self, layer, mask):  # type: ignore[no-untyped-def]
        calls.append(layer.layer_name)
        return real(self, layer, mask)

    monkeypatch.setattr(EdgePopup, "scores_for", counted)
    a, b = supermask.load(saved, fresh()), supermask.load(saved, fresh())
    assert sorted(calls) == ["0", "0", "3", "3"]  # once per layer and load, not again in the real run
    layers_a, layers_b = supermask.supermask_layers(a), supermask.supermask_layers(b)
    pointers = {layer.scores.data_ptr() for _, layer in layers_a + layers_b}
    assert len(pointers) == 4
    masks = [layer.mask().clone() for _, layer in layers_b]
    optimizer = torch.optim.SGD([p for p in a.parameters() if p.requires_grad], lr=10.0)
    a.train()
    a(torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))).square().sum().backward()
    optimizer.step()
    assert all(torch.equal(layer.mask(), m) for (_, layer), m in zip(layers_b, masks))
    assert not all(torch.equal(layer.mask(), m) for (_, layer), m in zip(layers_a, masks))


@pytest.mark.parametrize("method", ["edge-popup", "iterand", "edge-popup-global", "biprop"])
def test_the_cheap_mask_check_agrees_with_selecting_again(method: str) -> None:
    """load's check that a mask is what the config selects: where a method answers by a count
    (selects_rebuilt), it must agree with selecting from the rebuilt scores, for right and wrong counts."""
    from supermask.core.layers import supermask_layers

    torch.manual_seed(0)
    model = supermask.to_supermask(
        nn.Sequential(nn.Linear(7, 5), nn.ReLU(), nn.Linear(5, 3)), SupermaskConfig(k=0.4, method=method)
    )
    g = torch.Generator().manual_seed(1)
    answered = 0
    for _, layer in supermask_layers(model):
        n = layer.scores.numel()
        for count in range(n + 1):
            mask = torch.zeros(n, dtype=torch.bool)
            mask[torch.randperm(n, generator=g)[:count]] = True
            mask = mask.reshape(layer.scores.shape)
            with torch.no_grad():
                layer.scores.copy_(layer.method.scores_for(layer, mask))
            ramp = torch.arange(n, dtype=torch.float32).reshape(mask.shape) / n  # the rule before it was sped up
            assert torch.equal(layer.scores, torch.where(mask, ramp + 2.0, ramp))
            cheap = layer.method.selects_rebuilt(layer, mask)
            if cheap is not None:
                answered += 1
                assert cheap == torch.equal(layer.mask(), mask), (count, layer.kept())
    assert (answered > 0) == (method in ("edge-popup", "iterand")), answered  # others select and compare


def test_swapped_save_and_load_arguments_are_a_clear_type_error(tmp_path: Path) -> None:
    model = supermask.to_supermask(nn.Sequential(nn.Linear(4, 4)), SupermaskConfig())
    with pytest.raises(TypeError, match=r"save\(model, directory\) takes .* \(are the two swapped\?\)"):
        supermask.save(tmp_path / "ck", model)  # type: ignore[arg-type]
    assert not (tmp_path / "ck").exists()
    supermask.save(model, tmp_path / "ck")
    fresh = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(TypeError, match=r"load\(directory, model\) takes .*got model=PosixPath"):
        supermask.load(fresh, tmp_path / "ck")  # type: ignore[arg-type]
    assert not list(supermask.supermask_layers(fresh))


def test_compact_state_dict_loads_strictly_and_checks_the_weights() -> None:
    model = supermask.to_supermask(mlp(), supermask.SupermaskConfig(k=0.5, seed=3))
    state = supermask.compact_state_dict(model)
    assert not any(k.endswith("base_layer.weight") for k in state)
    same = supermask.to_supermask(mlp(1), supermask.SupermaskConfig(k=0.5, seed=3))
    assert not same.load_state_dict(state).missing_keys  # strict: the weights were made again, and checked
    other = supermask.to_supermask(mlp(), supermask.SupermaskConfig(k=0.5, seed=4))
    with pytest.raises(supermask.SupermaskError, match="frozen weights differ"):
        other.load_state_dict(state)


def test_a_checkpoint_of_a_method_not_registered_here_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registered = dict(registry._REGISTRY)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registered))
    register_method(type("Mine", (PositiveTopK,), {"name": "my-top-k"}))
    supermask.save(supermask.to_supermask(net(), supermask.SupermaskConfig(k=0.3, method="my-top-k")), tmp_path)
    monkeypatch.setattr(registry, "_REGISTRY", registered)  # a new process that did not import the method
    with pytest.raises(supermask.CheckpointError, match="method 'my-top-k', which is not registered in this process"):
        supermask.load(tmp_path, net())
