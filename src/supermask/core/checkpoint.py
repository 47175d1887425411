"""Compact checkpoints: seed + 1-bit masks + only what cannot be regenerated.

A checkpoint is a directory holding

* ``supermask.json``: format and library version, the config (seed, init, method, k), the
  converted layers with their shapes, kept counts and weight checksums, and the sha256 of
* ``supermask.safetensors``: ``mask/<layer>`` (uint8, 1 bit per weight), ``state/<key>`` for every
  tensor of the model's state that is not a regenerable random weight (BatchNorm statistics,
  learned biases, layers left dense, unconverted modules), and ``scores/<layer>`` only when saved
  with ``include_scores=True`` (to resume training).

Loading reads JSON and safetensors only: it never unpickles, so a stranger's checkpoint cannot run
code. Every check (file hash, format version, architecture, weight checksums) runs before the model
is changed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from supermask import __version__
from supermask.core.config import SupermaskConfig, SupermaskConfigError
from supermask.core.convert import SupermaskError, get_config, supermask_layers, to_supermask
from supermask.core.init import checksum, generate_weight
from supermask.core.masks import pack_bits, unpack_bits

FORMAT = "supermask"
FORMAT_VERSION = 1
CONFIG_FILE = "supermask.json"
TENSORS_FILE = "supermask.safetensors"


class CheckpointError(SupermaskError):
    """A checkpoint is missing, corrupt, of a newer format, or does not fit the model."""


def _regenerable_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the frozen random weights and of scores (stored separately)."""
    prefix_of = {id(m): n for n, m in model.named_modules()}
    keys = set()
    for _, layer in supermask_layers(model):
        prefix = prefix_of[id(layer)]
        keys.add(f"{prefix}.scores")
        if layer.method != "dense":
            keys.add(f"{prefix}.base_layer.weight")
    return keys


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(model: nn.Module, directory: str | os.PathLike[str], *, include_scores: bool = False) -> Path:
    """Write ``model``'s compact checkpoint to ``directory`` (created if needed); return its path.

    The tensors file is written first and the JSON last, each atomically, so a crash never leaves a
    JSON that points to a half-written tensors file.
    """
    cfg = get_config(model)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    layers: dict[str, Any] = {}
    was = model.training
    model.eval()
    with torch.no_grad():
        for name, layer in supermask_layers(model):
            weight = layer.base_layer.weight
            entry: dict[str, Any] = {
                "type": type(layer.base_layer).__name__,
                "shape": list(weight.shape),
                "weight_checksum": checksum(weight) if layer.method != "dense" else None,
            }
            if layer.method != "dense":
                mask = layer.mask()
                entry["kept"] = int(mask.sum())
                tensors[f"mask/{name}"] = pack_bits(mask)
                if include_scores and layer.scores is not None:
                    tensors[f"scores/{name}"] = layer.scores.detach().cpu().contiguous()
            layers[name] = entry
    model.train(was)
    skip = _regenerable_keys(model)
    state = {k: v for k, v in model.state_dict().items() if k not in skip}
    for key, value in state.items():
        tensors[f"state/{key}"] = value.detach().cpu().contiguous()
    blob = st_save(tensors)
    report: Any = model.supermask_report
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "torch_version": torch.__version__,
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "config": cfg.to_dict(),
        "layers": layers,
        "left_dense": list(report.left_dense),
        "has_scores": include_scores,
        "tensors_file": TENSORS_FILE,
        "tensors_sha256": hashlib.sha256(blob).hexdigest(),
        "tensors_bytes": len(blob),
    }
    _atomic_write(out / TENSORS_FILE, blob)
    _atomic_write(out / CONFIG_FILE, json.dumps(meta, indent=1).encode())
    return out


def read_checkpoint(directory: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read and verify a checkpoint directory: (metadata, tensors). Raises CheckpointError."""
    path = Path(directory)
    meta_path = path / CONFIG_FILE
    if not meta_path.is_file():
        raise CheckpointError(f"{path} is not a supermask checkpoint: {CONFIG_FILE} is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{meta_path} is corrupt (not valid JSON): {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{meta_path} is not a supermask checkpoint (format is {meta.get('format') if isinstance(meta, dict) else None!r})"
        )
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}, newer than this supermask "
            f"({__version__}) reads (up to {FORMAT_VERSION}); upgrade supermask to load it"
        )
    blob_path = path / str(meta.get("tensors_file", TENSORS_FILE))
    if not blob_path.is_file():
        raise CheckpointError(f"{blob_path} is missing: the checkpoint is incomplete")
    blob = blob_path.read_bytes()
    if len(blob) != meta.get("tensors_bytes") or hashlib.sha256(blob).hexdigest() != meta.get("tensors_sha256"):
        raise CheckpointError(
            f"{blob_path} is corrupt or truncated ({len(blob)} bytes, expected {meta.get('tensors_bytes')}; "
            "its sha256 does not match the one recorded in supermask.json)"
        )
    try:
        tensors = st_load(blob)
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{blob_path} cannot be read as safetensors: {exc}") from exc
    return meta, tensors


def _exact_names(names: list[str]) -> str:
    return "|".join(re.escape(n) for n in names)


def _apply(model: nn.Module, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> nn.Module:
    try:
        cfg = SupermaskConfig.from_dict(dict(meta["config"]))
    except (SupermaskConfigError, TypeError, KeyError) as exc:
        raise CheckpointError(f"the checkpoint's config is invalid: {exc}") from exc
    layers: dict[str, Any] = meta["layers"]
    # Convert exactly the saved layers (their names are the targets).
    cfg.target_modules = _exact_names(list(layers))
    cfg.exclude_modules = None
    cfg.first_layer_dense = cfg.last_layer_dense = False
    modules = dict(model.named_modules())
    weights: dict[str, torch.Tensor] = {}
    for name, entry in layers.items():
        module = modules.get(name)
        if module is None:
            raise CheckpointError(
                f"wrong architecture: the checkpoint has layer {name!r}, the model has no such module"
            )
        shape = list(module.weight.shape)
        if shape != entry["shape"] or type(module).__name__ != entry["type"]:
            raise CheckpointError(
                f"wrong architecture: layer {name!r} is {type(module).__name__}{shape} in the model, "
                f"{entry['type']}{entry['shape']} in the checkpoint"
            )
        if cfg.method != "dense":
            weight = generate_weight(name, tuple(shape), cfg, cfg.k)
            if checksum(weight) != entry["weight_checksum"]:
                raise CheckpointError(
                    f"the random weights of layer {name!r} regenerated from seed {cfg.seed} do not match the "
                    "checksum in the checkpoint (edited seed or init, or an incompatible supermask version); "
                    "refusing to run a different network"
                )
            weights[name] = weight
    to_supermask(model, cfg, _weights=weights or None)
    converted = {n: layer for n, layer in supermask_layers(model)}
    if set(converted) != set(layers):
        raise CheckpointError(f"wrong architecture: converted {sorted(converted)}, checkpoint has {sorted(layers)}")
    state = {k[len("state/") :]: v for k, v in tensors.items() if k.startswith("state/")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    regenerable = _regenerable_keys(model)
    missing = [k for k in missing if k not in regenerable]
    if missing or unexpected:
        raise CheckpointError(f"wrong architecture: missing state {missing[:10]}, unexpected state {unexpected[:10]}")
    with torch.no_grad():
        for name, layer in converted.items():
            if layer.scores is None:
                continue
            if f"scores/{name}" in tensors:
                layer.scores.copy_(tensors[f"scores/{name}"])
                continue
            if f"mask/{name}" not in tensors:
                raise CheckpointError(f"the checkpoint has no mask for layer {name!r}")
            mask = unpack_bits(tensors[f"mask/{name}"], tuple(layer.scores.shape))
            if int(mask.sum()) != layers[name].get("kept"):
                raise CheckpointError(f"the mask of layer {name!r} does not have the recorded kept count")
            # Scores that select exactly this mask under the method's own rule.
            if cfg.method == "bernoulli":  # sigmoid(+-1e4) is exactly 1 or 0: either eval rule gives the mask
                values = mask.float() * 2e4 - 1e4
            else:
                values = mask.float()
            layer.scores.copy_(values)
    return model


def load(directory: str | os.PathLike[str], model: nn.Module) -> nn.Module:
    """Convert ``model`` (the same architecture, unconverted) in place from a checkpoint; return it.

    All checks, a full trial conversion included, run on a copy first: on any error ``model`` is
    left unchanged.
    """
    meta, tensors = read_checkpoint(directory)
    if any(True for _ in supermask_layers(model)):
        raise CheckpointError("load() needs a fresh, unconverted model of the same architecture")
    _apply(copy.deepcopy(model), meta, tensors)  # dry run: raises before `model` is touched
    return _apply(model, meta, tensors)
