"""Property-based tests (hypothesis) of the two doors user input comes through: the run config parser and
the checkpoint loader. Property: any input either works as documented or raises the library's own error
with a message; never another exception, and never a changed network accepted in silence."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import supermask
from supermask.core.checkpoint import content_hash
from supermask.errors import CheckpointError, SupermaskConfigError
from supermask.runconfig import RunConfig, load_run_config, valid_keys

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


LITERALS = ["true", "false", "True", "n", "no", "off", "yes", "1", "0", "-1", "010", "0x1f", "1e-3", "1.0e38",
            "1_000", ".inf", "-.inf", ".nan", "null", "~", "[0.9, 0.999]", "[1]", "{a: 1}", "'x'", "cuda", "cpu",
            "auto", "mlp", "conv4", "digits", "edge-popup", "dense", "bernoulli", "0.5", "2", "1.5", "", " ",
            "[", "{", "a: b", "!!python/object:os.system", "&a", "*a", "- 1", "freeze", "learn"]  # fmt: skip


values = st.one_of(
    st.sampled_from(LITERALS),
    st.text(max_size=12),
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


keys = st.one_of(st.sampled_from(valid_keys()), st.text(max_size=15), st.sampled_from(["optim.lrr", "supermask."]))


def _assert_typed(cfg: RunConfig) -> None:
    """Every accepted value has its documented type (a bool is a bool, a number finite, ...)."""
    for section in ("model", "data", "optim", "train"):
        obj = getattr(cfg, section)
        for f in dataclasses.fields(obj):
            value, kind = getattr(obj, f.name), str(f.type)
            if value is None:
                assert "None" in kind, (section, f.name)
            elif kind == "bool | str":  # train.bf16
                assert value is True or value is False or value == "auto", (section, f.name, value)
            elif kind.startswith("bool"):
                assert isinstance(value, bool), (section, f.name, value)
            elif kind.startswith("int"):
                assert isinstance(value, int) and not isinstance(value, bool), (section, f.name, value)
            elif kind.startswith("float"):
                assert isinstance(value, float) and value == value and abs(value) != float("inf")
            elif kind.startswith("str"):
                assert isinstance(value, str)
    sm = cfg.supermask_config()
    assert isinstance(sm.scale_fan, bool) and isinstance(sm.first_layer_dense, bool) and 0 < sm.k <= 1


yaml_texts = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda section, key, value: f"{section}:\n  {key}: {value}\n",
        st.sampled_from(["model", "data", "optim", "train", "supermask", "other", "- x"]),
        st.sampled_from([k.split(".", 1)[1] for k in valid_keys()] + ["bogus"]),
        values,
    ),
)


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))


X = torch.randn(2, 3, 8, 8)


@pytest.fixture(scope="module", params=[1, 3], ids=["one-mask", "bank-of-3-tasks"])
def saved(request: Any) -> Any:
    tmp = Path(tempfile.mkdtemp())
    model = supermask.to_supermask(_model(), supermask.SupermaskConfig(k=0.4, seed=3, tasks=request.param))
    with torch.no_grad():
        model.train()
        model(torch.randn(8, 3, 8, 8))  # BatchNorm statistics worth saving
        model.eval()
        reference = torch.stack([_task_output(model, t) for t in range(request.param)])
    supermask.save(model, tmp / "ck")
    yield tmp / "ck", reference
    shutil.rmtree(tmp)


def _task_output(model: nn.Module, task: int) -> torch.Tensor:
    supermask.set_task(model, task)
    with torch.no_grad():
        return model.eval()(X)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=False), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)


def _paths(meta: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(meta, dict):
        for k, v in meta.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(meta, list):
        for i, v in enumerate(meta):
            out += _paths(v, (*prefix, i))
    return out


def _load_or_refuse(folder: Path, reference: torch.Tensor) -> None:
    model = _model()
    before = copy.deepcopy(model.state_dict())
    try:
        loaded = supermask.load(folder, model)
    except CheckpointError as exc:
        assert str(exc)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # model unchanged
        return
    outputs = torch.stack([_task_output(loaded, t) for t in range(loaded.supermask_config.tasks)])
    assert torch.equal(outputs, reference)  # it loaded: it must be exactly the saved network, every task


@SETTINGS
@given(st.lists(st.tuples(keys, values), max_size=4))
def test_overrides_either_parse_as_documented_or_raise_a_config_error(items: list[tuple[str, str]]) -> None:
    overrides = [f"{k}={v}" for k, v in items]
    try:
        cfg = load_run_config(None, overrides)
    except SupermaskConfigError as exc:
        assert str(exc)
        return
    _assert_typed(cfg)


@SETTINGS
@given(yaml_texts)
def test_config_files_either_parse_or_raise_a_config_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(text)
        try:
            cfg = load_run_config(path, [])
        except SupermaskConfigError as exc:
            assert str(exc)
            return
    _assert_typed(cfg)


@SETTINGS
@given(data=st.data(), rehash=st.booleans(), delete=st.booleans())
def test_any_edit_of_the_json_is_refused_or_changes_nothing(saved: Any, data: Any, rehash: bool, delete: bool) -> None:
    folder, reference = saved
    meta = json.loads((folder / "supermask.json").read_text())
    path = data.draw(st.sampled_from(_paths(meta)))
    parent = meta
    for part in path[:-1]:
        parent = parent[part]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(json_values)
    if rehash:  # as a deliberate forger would: only the deep checks stand between the edit and a wrong network
        try:
            meta["content_sha256"] = content_hash(meta)
        except (TypeError, ValueError):
            pass
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "ck"
        shutil.copytree(folder, target)
        (target / "supermask.json").write_text(json.dumps(meta))
        _load_or_refuse(target, reference)


@SETTINGS
@given(data=st.data(), which=st.sampled_from(["json", "tensors"]))
def test_corrupted_bytes_are_refused(saved: Any, data: Any, which: str) -> None:
    folder, reference = saved
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "ck"
        shutil.copytree(folder, target)
        name = json.loads((target / "supermask.json").read_text())["tensors_file"] if which == "tensors" else None
        path = target / (name or "supermask.json")
        blob = bytearray(path.read_bytes())
        cut = data.draw(st.integers(0, len(blob)))
        if data.draw(st.booleans()):
            blob = blob[:cut]
        else:
            position = min(cut, len(blob) - 1)
            blob[position] ^= data.draw(st.integers(1, 255))
        path.write_bytes(bytes(blob))
        _load_or_refuse(target, reference)
