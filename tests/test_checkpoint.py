"""Compact checkpoints: bit-exact reloads, size, and every bad input."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

import supermask
from supermask.core.config import SupermaskConfig
from supermask.models import create


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


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    supermask.to_supermask(model, SupermaskConfig(seed=1))
    return supermask.save(model, tmp_path / "ck")


def fresh() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))


def assert_load_fails(path: Path, model: nn.Module, match: str) -> None:
    before = copy.deepcopy(model)
    with pytest.raises(supermask.CheckpointError, match=match):
        supermask.load(path, model)
    assert str(model) == str(before)  # never half-converted
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), before.state_dict().values()))


def test_corrupt_and_truncated(saved: Path) -> None:
    blob = saved / "supermask.safetensors"
    data = bytearray(blob.read_bytes())
    data[-3] ^= 0xFF
    blob.write_bytes(bytes(data))
    assert_load_fails(saved, fresh(), "corrupt or truncated")
    blob.write_bytes(bytes(data[: len(data) // 2]))
    assert_load_fails(saved, fresh(), "corrupt or truncated")
    blob.unlink()
    assert_load_fails(saved, fresh(), "missing")


def test_bad_json_and_missing(saved: Path, tmp_path: Path) -> None:
    assert_load_fails(tmp_path / "nothing", fresh(), "supermask.json is missing")
    (saved / "supermask.json").write_text("{not json")
    assert_load_fails(saved, fresh(), "not valid JSON")


def edit_meta(path: Path, **changes: object) -> None:
    meta = json.loads((path / "supermask.json").read_text())
    for key, value in changes.items():
        if key.startswith("config."):
            meta["config"][key[7:]] = value
        else:
            meta[key] = value
    (path / "supermask.json").write_text(json.dumps(meta))


def test_newer_format(saved: Path) -> None:
    edit_meta(saved, format_version=99)
    assert_load_fails(saved, fresh(), "newer than this supermask")


def test_wrong_seed(saved: Path) -> None:
    edit_meta(saved, **{"config.seed": 2})
    assert_load_fails(saved, fresh(), "do not match the checksum")


def test_wrong_architecture(saved: Path) -> None:
    assert_load_fails(
        saved,
        nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.Flatten(), nn.Linear(5 * 36, 2)),
        "wrong architecture",
    )
    assert_load_fails(saved, nn.Sequential(nn.Linear(3, 3)), "wrong architecture")


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
    assert {p.name for p in saved.iterdir()} == {"supermask.json", "supermask.safetensors"}
