"""Compact checkpoints: seed + 1-bit masks + only what cannot be regenerated.

A checkpoint is a directory holding

* ``supermask.json``: format and library version, the config (seed, init, method, k), the
  converted layers with their shapes, kept counts and weight checksums, optional user metadata,
  the name, size and sha256 of the tensors file, and ``content_sha256``, a hash of all of it;
* ``supermask-<hash>.safetensors``: ``mask/<layer>`` (uint8, 1 bit per weight), ``state/<key>`` for
  every tensor of the model's state that is not a regenerable random weight (BatchNorm statistics,
  learned biases, layers left dense, unconverted modules), and ``scores/<layer>`` only when saved
  with ``include_scores=True`` (to resume training).

Trust: loading reads JSON and safetensors only (it never unpickles, so a stranger's checkpoint
cannot run code). Any edit of ``supermask.json`` fails its content hash; beyond that, each random
weight is regenerated and compared with its checksum, and each mask is re-selected under the saved
config and compared bit for bit, so no edit (k, method, init, shapes, layers) can load a different
network. Every check runs on a copy before the model is changed.

Saving over a checkpoint is atomic as a whole: the tensors file has a new name (its hash), then
``supermask.json`` is replaced in one step, then the old tensors file is removed. Killed at any
instant, the directory holds the old or the new checkpoint.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from supermask import __version__
from supermask.core.config import SupermaskConfig
from supermask.core.convert import apply_conversion
from supermask.core.init import checksum, generate_weight
from supermask.core.inspection import get_config
from supermask.core.layers import SupermaskLayer, SupermaskParameter, supermask_layers
from supermask.core.masks import outside_inference_mode
from supermask.core.methods import MaskMethod, method_class, method_names
from supermask.core.targets import fan_of, plan_conversion
from supermask.errors import CheckpointError, StorageError, SupermaskError
from supermask.fileio import atomic_write, make_dirs, remove_temp_files

FORMAT = "supermask"
FORMAT_VERSION = 2
CONFIG_FILE = "supermask.json"
TENSORS_GLOB = "supermask*.safetensors"
MAX_JSON_BYTES = 64 << 20  # a checkpoint's JSON holds names and hashes: far smaller for any real model
_INFORMATIONAL = ("content_sha256", "library_version", "torch_version")  # not covered by the content hash


def content_hash(meta: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``meta`` without its informational keys."""
    body = {k: v for k, v in meta.items() if k not in _INFORMATIONAL}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _regenerable_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the frozen random weights and of scores (stored separately), under every
    name of each converted layer (a shared layer appears in the state dict once per name)."""
    keys = set()
    for name, module in model.named_modules(remove_duplicate=False):
        if not hasattr(module, "layer_name") or not hasattr(module, "base_layer"):
            continue
        prefix = f"{name}." if name else ""
        keys.add(f"{prefix}scores")
        keys.update(f"{prefix}scores_bank.{t}" for t in range(module.tasks))
        keys.update(f"{prefix}{buffer}" for buffer in module.method.own_buffers)  # stored by the method
        if module.method.has_scores:  # its weights are regenerated from the seed
            keys.add(f"{prefix}base_layer.weight")
    return keys


def regenerable_weight_keys(module: nn.Module) -> set[str]:
    """The state-dict keys of ``module`` (a converted model, or any module holding converted layers, such as
    a LightningModule) whose frozen weights conversion makes again: random ones from the seed, or the base
    model's own (``weight_init='pretrained'``). Weights a method changes in training (IteRand's re-draws)
    and learned ones (``dense``) are not among them."""
    keys: set[str] = set()
    for name, layer in module.named_modules(remove_duplicate=False):
        if not isinstance(layer, SupermaskLayer) or not layer.method.has_scores:
            continue
        if type(layer.method).restore_weight is not MaskMethod.restore_weight:
            continue  # the method changes weights while it trains: they are state
        keys.add(f"{name}.base_layer.weight" if name else "base_layer.weight")
    return keys


def compact_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` without the frozen weights that conversion makes again
    (:func:`regenerable_weight_keys`): what a trainer's checkpoint needs to resume exactly (scores, learned
    parameters, k, the method's buffers), about half the size for edge-popup. ``model.load_state_dict(state)``
    onto a model converted with the same config restores it, strict included; each layer checks that its
    own frozen weight is the one the state was saved with (a fingerprint in ``_extra_state``) and raises
    otherwise."""
    get_config(model)
    skip = regenerable_weight_keys(model)
    return {k: v for k, v in model.state_dict().items() if k not in skip}


#: the frozen weights' dtypes a checkpoint records (float32, the default, is not recorded)
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}


#: the prefixes that wrappers add to every module name: DataParallel / DistributedDataParallel, torch.compile
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _wrapper_hint(name: str, modules: dict[str, nn.Module]) -> str:
    """Advice when ``name`` and the model's names differ by a wrapper's prefix ("" otherwise)."""
    for prefix in _WRAPPER_PREFIXES:
        if name.startswith(prefix) and name[len(prefix) :] in modules:
            return (
                f" (it has {name[len(prefix) :]!r}: the checkpoint was saved from a model wrapped by "
                f"DataParallel / DistributedDataParallel or torch.compile, whose names start with {prefix!r}; "
                "load it into the same wrapper, or save the model inside the wrapper)"
            )
        if prefix + name in modules:
            return (
                f" (it has {prefix + name!r}: this model is wrapped by DataParallel / DistributedDataParallel or "
                "torch.compile, the checkpoint's was not; load it into the model inside the wrapper)"
            )
    return ""


def _packed_exactly(method: MaskMethod, name: str, mask: torch.Tensor) -> torch.Tensor:
    """``method.pack(mask)``, checked to unpack to ``mask`` itself: a mask the stored bits cannot hold (a
    float mask of other values than 0 and 1 under the default 1-bit packing, a method's own pack/unpack
    that loses something) is refused before anything is written, never stored as another network."""
    packed = method.pack(mask)
    if mask.dtype == torch.bool and type(method).pack is MaskMethod.pack and type(method).unpack is MaskMethod.unpack:
        return packed  # 1 bit per bool: exact by construction
    try:
        back = method.unpack(packed.cpu(), tuple(mask.shape))
        live = mask.detach().cpu()
        exact = torch.equal(back, live) if back.dtype == live.dtype else torch.equal(back.float(), live.float())
    except (ValueError, RuntimeError, TypeError) as exc:
        raise SupermaskError(
            f"layer {name!r}: method {method.name!r} cannot read back its packed mask ({exc})"
        ) from exc
    if not exact:
        values = torch.unique(mask.detach().to("cpu", torch.float32))[:5].tolist()
        raise SupermaskError(
            f"layer {name!r}: the mask of method {method.name!r} (values {values}) does not survive its "
            f"{method.mask_bits}-bit storage (pack/unpack give another mask); a mask of other values than 0 "
            "and 1 needs its own MaskMethod.pack/unpack/mask_bits, as signed-supermask's {-1, 0, 1} has"
        )
    return packed


def save(
    model: nn.Module,
    directory: str | os.PathLike[str],
    *,
    include_scores: bool = False,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s compact checkpoint to ``directory`` (created if needed); return its path.

    ``metadata``: JSON-ready information kept with the checkpoint (and covered by its content hash),
    e.g. the run config that built the model. Replacing an existing checkpoint is atomic. With task
    masks, every task's mask is stored and the active task is recorded (``load`` activates it again).
    """
    _check_arguments("save(model, directory)", model, directory)
    cfg = get_config(model)
    tensors: dict[str, torch.Tensor] = {}
    layers: dict[str, Any] = {}
    was = model.training
    model.eval()
    converted = supermask_layers(model)
    active = converted[0][1].task if converted else 0
    draw = converted[0][1].method.eval_draw if converted else 0
    try:
        if converted:  # a random eval mask is stored as draw 0, the one its config (and so load) selects
            converted[0][1].method.eval_draw = 0
        with torch.no_grad():
            for name, layer in converted:
                weight = layer.base_layer.weight
                in_place = isinstance(layer, SupermaskParameter)
                layers[name] = {
                    "type": layer.owner_type if in_place else type(layer.base_layer).__name__,
                    "shape": list(weight.shape),
                    "weight_checksum": checksum(weight) if layer.method.has_scores else None,
                    **({"in_place": True} if in_place else {}),
                }
                if layer.method.has_scores and weight.dtype != torch.float32:  # the values the network ran with
                    if weight.dtype not in _DTYPE_NAMES:
                        raise SupermaskError(
                            f"layer {name!r}: frozen weights of {weight.dtype} cannot be stored; use float32, "
                            "float64, float16 or bfloat16"
                        )
                    layers[name]["weight_dtype"] = _DTYPE_NAMES[weight.dtype]
            for task in range(cfg.tasks):  # every layer on one task at a time (a global top-k spans layers)
                for _, layer in converted:
                    layer.use_task(task)
                for name, layer in converted:
                    if not layer.method.has_scores:
                        continue
                    mask = layer.mask()
                    key = _task_key(name, task, cfg.tasks)
                    if cfg.tasks == 1:
                        layers[name]["kept"] = layer.method.kept(mask)
                    else:
                        layers[name].setdefault("kept", []).append(layer.method.kept(mask))
                    tensors[f"mask/{key}"] = _packed_exactly(layer.method, name, mask)
                    if include_scores and layer.scores is not None:
                        tensors[f"scores/{key}"] = layer.scores.detach().cpu().contiguous()
    finally:  # the model as it was, saved or refused: its task, its eval draw and its train/eval mode
        for _, layer in converted:
            layer.use_task(active)
        if converted:
            converted[0][1].method.eval_draw = draw
        model.train(was)
    if converted:
        method = converted[0][1].method
        extra = method.extra_state([layer for _, layer in converted])
        if not isinstance(extra, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in extra.items()
        ):
            raise SupermaskError(
                f"method {method.name!r}: extra_state() must give a dict of str to tensors, not {extra!r:.80}"
            )
        for key, value in extra.items():
            tensors[f"extra/{key}"] = value.detach().cpu().contiguous()
    skip = _regenerable_keys(model)
    # each layer's k is in the config: its state_dict copy (_extra_state) is not stored twice
    state = {k: v for k, v in model.state_dict().items() if k not in skip and not k.endswith("._extra_state")}
    base_fingerprints: dict[str, str] = {}
    if cfg.weight_init == "pretrained":  # frozen parameters are the base model's: a fingerprint, not a copy
        trainable = {n for n, p in model.named_parameters(remove_duplicate=False) if p.requires_grad}
        for key in [n for n, _ in model.named_parameters(remove_duplicate=False)]:
            if key in state and key not in trainable:
                base_fingerprints[key] = checksum(state.pop(key))
    state_aliases = _store_state(state, tensors)
    try:
        blob = st_save(tensors)
    except Exception as exc:  # safetensors refuses partly overlapping tensors with its own error types
        raise SupermaskError(f"the model's state cannot be stored: {exc}") from exc
    digest = hashlib.sha256(blob).hexdigest()
    report: Any = model.supermask_report
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "torch_version": torch.__version__,
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "config": cfg.to_dict(),
        "layers": layers,
        "left_dense": list(report.left_dense),
        "has_scores": include_scores,
        "state_aliases": state_aliases,
        "base_fingerprints": base_fingerprints,
        "metadata": metadata or {},
        **({"active_task": active} if cfg.tasks > 1 else {}),  # load makes it the active task again
        "tensors_file": f"supermask-{digest[:16]}.safetensors",
        "tensors_sha256": digest,
        "tensors_bytes": len(blob),
    }
    try:
        meta["content_sha256"] = content_hash(meta)
    except (TypeError, ValueError) as exc:
        raise SupermaskError(f"checkpoint metadata must be JSON-ready (finite numbers, strings, lists): {exc}") from exc
    out = make_dirs(directory)  # only now: a save refused above leaves nothing behind, not even a folder
    remove_temp_files(out)  # what a killed save left
    atomic_write(out / meta["tensors_file"], blob)  # a new name: the old checkpoint is still whole
    atomic_write(out / CONFIG_FILE, json.dumps(meta, indent=1))  # the switch, in one rename
    for old in out.glob(TENSORS_GLOB):
        if old.name != meta["tensors_file"]:
            try:
                old.unlink()
            except OSError as exc:
                raise StorageError(f"cannot remove the replaced tensors file {old}: {exc.strerror or exc}") from exc
    return out


def _task_key(name: str, task: int, tasks: int) -> str:
    """A layer's tensor name for one task (the plain layer name without a bank of tasks)."""
    return name if tasks == 1 else f"{name}/task{task}"


def _store_state(state: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    """Put each state tensor in ``tensors`` once: a tensor reached under several keys (a shared module, tied
    weights) is stored under its first key, and ``{other key: first key}`` is returned."""
    first: dict[tuple[Any, ...], str] = {}
    aliases: dict[str, str] = {}
    for key, value in state.items():
        identity = (
            value.untyped_storage().data_ptr(),
            value.storage_offset(),
            value.shape,
            value.stride(),
            value.dtype,
        )
        if value.numel() and identity in first:
            aliases[key] = first[identity]
            continue
        first[identity] = key
        tensors[f"state/{key}"] = value.detach().cpu().contiguous()
    return aliases


# --- reading -----------------------------------------------------------------------------------


def _expect(meta: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in meta:
        raise CheckpointError(f"{where} has no {key!r}: the checkpoint is incomplete or not one supermask wrote")
    value = meta[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, (int,))):
        raise CheckpointError(f"{where}: {key!r} is {type(value).__name__}, expected {getattr(kind, '__name__', kind)}")
    return value


def _check_layers(layers: dict[str, Any], where: str) -> None:
    for name, entry in layers.items():
        here = f"{where}, layer {name!r}"
        if not isinstance(entry, dict):
            raise CheckpointError(f"{here} is not a mapping")
        _expect(entry, "type", str, here)
        shape = _expect(entry, "shape", list, here)
        if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
            raise CheckpointError(f"{here}: shape {shape!r} is not a list of positive integers")
        if entry.get("weight_dtype") is not None and entry["weight_dtype"] not in _DTYPES:
            raise CheckpointError(f"{here}: weight_dtype {entry['weight_dtype']!r} is not one of {sorted(_DTYPES)}")
        if entry.get("weight_checksum") is not None:
            _expect(entry, "weight_checksum", str, here)
            kept = _expect(entry, "kept", (int, list), here)
            if isinstance(kept, list) and not all(isinstance(n, int) and not isinstance(n, bool) for n in kept):
                raise CheckpointError(f"{here}: kept must be a count per task")


def _check_arguments(signature: str, model: Any, directory: Any) -> None:
    """A clear TypeError for swapped or wrong arguments (save takes the model first, load the directory)."""
    if not isinstance(model, nn.Module) or not isinstance(directory, (str, os.PathLike)):
        raise TypeError(
            f"{signature} takes a torch.nn.Module and a directory path; got model={type(model).__name__}, "
            f"directory={type(directory).__name__} (are the two swapped?)"
        )


def read_checkpoint(directory: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read and verify a checkpoint directory: (metadata, tensors). Raises :class:`CheckpointError`."""
    path = Path(directory)
    meta_path = path / CONFIG_FILE
    if not meta_path.is_file():
        raise CheckpointError(f"{path} is not a supermask checkpoint: {CONFIG_FILE} is missing")
    try:
        size = meta_path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise CheckpointError(f"{meta_path} is {size} bytes, far larger than a checkpoint's metadata: not one")
        meta = json.loads(meta_path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{meta_path} is corrupt (not valid JSON): {exc}") from exc
    except OSError as exc:
        raise CheckpointError(f"cannot read {meta_path}: {exc.strerror or exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{meta_path} is not a supermask checkpoint (format is {found!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version != FORMAT_VERSION:
        newer = isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}; this supermask ({__version__}) reads version "
            f"{FORMAT_VERSION}" + ("; upgrade supermask to load it" if newer else " only")
        )
    recorded = meta.get("content_sha256")
    try:
        actual = content_hash(meta)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{meta_path} is corrupt: {exc}") from exc
    if recorded != actual:
        raise CheckpointError(
            f"{meta_path} was edited or is corrupt: its content hash does not match what was saved. "
            "Refusing to load a network other than the saved one; save the model again instead of editing the file"
        )
    where = str(meta_path)
    _expect(meta, "config", dict, where)
    _check_layers(_expect(meta, "layers", dict, where), where)
    _expect(meta, "left_dense", list, where)
    _expect(meta, "has_scores", bool, where)
    aliases = _expect(meta, "state_aliases", dict, where)
    prints = meta.setdefault("base_fingerprints", {})  # optional: absent before masks over trained weights
    if not isinstance(prints, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in prints.items()):
        raise CheckpointError(f"{where}: base_fingerprints must map names to checksums")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()):
        raise CheckpointError(f"{where}: state_aliases must map names to names")
    _expect(meta, "metadata", dict, where)
    name = _expect(meta, "tensors_file", str, where)
    expected_bytes = _expect(meta, "tensors_bytes", int, where)
    expected_sha = _expect(meta, "tensors_sha256", str, where)
    if Path(name).name != name or not name.endswith(".safetensors"):
        raise CheckpointError(f"{where}: tensors_file {name!r} must be a .safetensors file name in the same folder")
    blob_path = path / name
    if not blob_path.is_file():
        raise CheckpointError(f"{blob_path} is missing: the checkpoint is incomplete")
    actual_bytes = blob_path.stat().st_size
    if actual_bytes != expected_bytes:  # checked before reading: a huge file is never read into memory
        raise CheckpointError(f"{blob_path} is {actual_bytes} bytes, the checkpoint recorded {expected_bytes}")
    try:
        blob = blob_path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {blob_path}: {exc.strerror or exc}") from exc
    if hashlib.sha256(blob).hexdigest() != expected_sha:
        raise CheckpointError(f"{blob_path} is corrupt: its sha256 does not match the one in {CONFIG_FILE}")
    try:
        tensors = st_load(blob)
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{blob_path} cannot be read as safetensors: {exc}") from exc
    return meta, tensors


def _exact_names(names: list[str]) -> str:
    return "|".join(re.escape(n) for n in names)


@dataclass
class _Prepared:
    """What the dry run made, for the real run: weights regenerated and checked against their checksums,
    and the scores rebuilt from the masks (per layer and task)."""

    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    scores: dict[str, torch.Tensor] = field(default_factory=dict)
    done: bool = False


def _apply(model: nn.Module, meta: dict[str, Any], tensors: dict[str, torch.Tensor], prepared: _Prepared) -> nn.Module:
    """Convert ``model`` from the checkpoint. The dry run (``prepared.done`` false) regenerates and checks
    every weight, rebuilds the scores and re-selects and compares every mask; the real run reuses what it
    made (the same deterministic steps on an identical model): nothing is generated, hashed or compared twice."""
    saved_cfg, cfg, active = _saved_config(meta)
    layers: dict[str, Any] = meta["layers"]
    extra = {k[len("extra/") :]: v for k, v in tensors.items() if k.startswith("extra/")}
    weights = _frozen_weights(model, cfg, layers, extra, prepared)
    # the conversion's two steps, with the checked weights and placeholder scores that the masks set next
    apply_conversion(model, plan_conversion(model, cfg), weights=weights or None, initial_scores=False)
    converted = {n: layer for n, layer in supermask_layers(model)}
    if set(converted) != set(layers):
        raise CheckpointError(f"wrong architecture: converted {sorted(converted)}, checkpoint has {sorted(layers)}")
    _load_state(model, meta, tensors)
    _load_masks(model, converted, cfg, layers, tensors, extra, prepared)
    for layer in converted.values():
        layer.use_task(active)
    model.supermask_config = saved_cfg  # type: ignore[assignment,unused-ignore]
    model.supermask_report.left_dense = [str(n) for n in meta["left_dense"]]  # type: ignore[union-attr]
    return model


def _saved_config(meta: dict[str, Any]) -> tuple[SupermaskConfig, SupermaskConfig, int]:
    """The checkpoint's config (its method registered here, every field valid), the config that converts
    exactly its saved layers (their names are the targets), and the task active at save."""
    config = meta.get("config")
    method = config.get("method") if isinstance(config, dict) else None
    if isinstance(method, str) and method not in method_names():
        raise CheckpointError(
            f"the checkpoint's masks were made by method {method!r}, which is not registered in this process: "
            f"import the module that registers it (@register_method) before loading (registered: "
            f"{', '.join(method_names())})"
        )
    try:
        saved_cfg = SupermaskConfig.from_dict(dict(meta["config"]))
    except (SupermaskError, TypeError) as exc:
        raise CheckpointError(f"the checkpoint's config is invalid: {exc}") from exc
    active = meta.get("active_task", 0)  # absent: one task, or a bank saved before it was recorded
    if not isinstance(active, int) or isinstance(active, bool) or not 0 <= active < saved_cfg.tasks:
        raise CheckpointError(f"the checkpoint's active_task {active!r} is not one of its {saved_cfg.tasks} tasks")
    if not meta["layers"]:
        raise CheckpointError("the checkpoint has no converted layers")
    cfg = copy.copy(saved_cfg)
    in_place = [name for name, entry in meta["layers"].items() if isinstance(entry, dict) and entry.get("in_place")]
    cfg.target_modules = _exact_names([name for name in meta["layers"] if name not in in_place])
    cfg.target_parameters = _exact_names(in_place) if in_place else None
    cfg.exclude_modules = None
    cfg.first_layer_dense = cfg.last_layer_dense = False
    return saved_cfg, cfg, active


def _frozen_weights(
    model: nn.Module, cfg: SupermaskConfig, layers: dict[str, Any], extra: dict[str, torch.Tensor], prepared: _Prepared
) -> dict[str, torch.Tensor]:
    """Each saved layer's frozen weight, checked: the model's layer has the saved type and shape, a random
    weight regenerated from the seed (and the method's saved state) matches its checksum, a pretrained
    one its fingerprint. Empty for a method without scores (its learned weights are in the state)."""
    modules = dict(model.named_modules())
    weights: dict[str, torch.Tensor] = {}
    generated: dict[str, torch.Tensor] = {}  # regenerated random weights, checked against their checksums below
    method = method_class(cfg.method)(cfg)
    for name, entry in layers.items():
        if entry.get("in_place"):  # a parameter masked in place: NAME is the parameter's qualified name
            owner_name, _, parameter = name.rpartition(".")
            module = modules.get(owner_name)
            source = module._parameters.get(parameter) if module is not None else None
        else:
            module = modules.get(name)
            source = getattr(module, "weight", None) if module is not None else None
        if module is None or not isinstance(source, torch.Tensor):
            raise CheckpointError(
                f"wrong architecture: the checkpoint has layer {name!r}, the model has no such layer"
                + _wrapper_hint(name, modules)
            )
        shape = list(source.shape)
        if shape != entry["shape"] or type(module).__name__ != entry["type"]:
            raise CheckpointError(
                f"wrong architecture: layer {name!r} is {type(module).__name__}{shape} in the model, "
                f"{entry['type']}{entry['shape']} in the checkpoint"
            )
        has_scores = method_class(cfg.method).has_scores
        if (entry.get("weight_checksum") is None) == has_scores:
            raise CheckpointError(f"layer {name!r}: its entry does not fit method {cfg.method!r}")
        if has_scores and name in prepared.weights:
            weights[name] = prepared.weights[name]
        elif has_scores and cfg.weight_init == "pretrained":  # the base model's own weights, fingerprinted
            weight = source.detach().to("cpu", torch.float32).clone()
            if checksum(weight) != entry["weight_checksum"]:
                raise CheckpointError(
                    f"wrong base model: the weights of layer {name!r} differ from those the checkpoint's masks were "
                    "made for (their fingerprint does not match); load it onto the base model it was trained from"
                )
            weights[name] = weight
        elif has_scores:
            fan_shape = (
                fan_of(module, name.rpartition(".")[2])
                if entry.get("in_place")
                else tuple(shape[::-1])
                if entry["type"] == "Conv1D"
                else tuple(shape)
            )
            weight = generate_weight(name, tuple(shape), cfg, cfg.k, fan_shape)
            try:
                weight = method.restore_weight(name, weight, fan_shape, extra)
            except (KeyError, ValueError, RuntimeError) as exc:
                raise CheckpointError(f"layer {name!r}: the method's saved state does not fit: {exc}") from exc
            if entry.get("weight_dtype") is not None:  # a half-precision model ran with its weights rounded
                weight = weight.to(_DTYPES[entry["weight_dtype"]])
            generated[name] = weight
    for name, digest in zip(generated, _checksums(list(generated.values()))):  # in layer order: the first is named
        if digest != layers[name]["weight_checksum"]:
            raise CheckpointError(
                f"the random weights of layer {name!r} regenerated from seed {cfg.seed} do not match the "
                "checksum in the checkpoint (edited seed or init, or an incompatible supermask version); "
                "refusing to run a different network"
            )
    weights.update(generated)
    prepared.weights.update(weights)
    return weights


def _load_state(model: nn.Module, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """What the base model does not hold (trained heads, norms, statistics; aliases of shared tensors),
    loaded; with pretrained weights, the base's own parameters checked against their fingerprints."""
    state = {k[len("state/") :]: v for k, v in tensors.items() if k.startswith("state/")}
    for alias, key in meta["state_aliases"].items():
        if key not in state:
            raise CheckpointError(f"state {alias!r} is recorded as {key!r}, which the checkpoint does not hold")
        state[alias] = state[key]
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(f"wrong architecture: {' '.join(str(exc).split())[:500]}") from exc
    regenerable = _regenerable_keys(model)
    base = meta["base_fingerprints"]
    missing = [k for k in missing if k not in regenerable and k not in base]
    if missing or unexpected:
        raise CheckpointError(f"wrong architecture: missing state {missing[:10]}, unexpected state {unexpected[:10]}")
    if base:
        own = model.state_dict()
        for key in own:  # in the model's order: the first differing parameter is named
            if key in base and checksum(own[key]) != base[key]:
                raise CheckpointError(
                    f"wrong base model: its parameter {key!r} differs from the one the checkpoint was made with "
                    "(fingerprint mismatch); load it onto the base model it was trained from"
                )
        absent = sorted(set(base) - set(own))
        if absent:
            raise CheckpointError(f"wrong base model: it has no parameter {absent[0]!r}")


def _load_masks(
    model: nn.Module,
    converted: dict[str, Any],
    cfg: SupermaskConfig,
    layers: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    extra: dict[str, torch.Tensor],
    prepared: _Prepared,
) -> None:
    """The method's extra state, then every task's masks: unpacked, their kept counts checked, the scores
    set (saved, or rebuilt from the mask by the method once) and, in the dry run, each mask selected again
    under the saved config and compared with the stored one."""
    dry_run = not prepared.done
    layer_list = list(converted.values())
    with torch.no_grad():
        if layer_list:
            try:
                layer_list[0].method.load_extra_state(layer_list, extra)
            except (KeyError, ValueError, RuntimeError) as exc:
                raise CheckpointError(f"the method's saved state does not fit: {exc}") from exc
        for task in range(cfg.tasks):
            for layer in layer_list:
                layer.use_task(task)
            stored: dict[str, torch.Tensor] = {}
            rebuilt: set[str] = set()  # layers whose scores were built from their mask by the method
            for name, layer in converted.items():
                if layer.scores is None:
                    continue
                method = layer.method
                key = _task_key(name, task, cfg.tasks)
                if not dry_run and key in prepared.scores:  # the dry run checked this mask on an identical model
                    _adopt(layer.scores, prepared.scores[key])
                    continue
                packed = tensors.get(f"mask/{key}")
                if packed is None:
                    raise CheckpointError(f"the checkpoint has no mask for layer {key!r}")
                try:
                    mask = method.unpack(packed, tuple(layer.scores.shape))
                except ValueError as exc:
                    raise CheckpointError(f"the mask of layer {key!r} is malformed: {exc}") from exc
                kept = layers[name]["kept"]
                expected = (
                    kept
                    if cfg.tasks == 1
                    else kept[task]
                    if isinstance(kept, list) and len(kept) == cfg.tasks
                    else None
                )
                if method.kept(mask) != expected:
                    raise CheckpointError(f"the mask of layer {key!r} does not have the recorded kept count")
                stored[name] = mask
                saved_scores = tensors.get(f"scores/{key}")
                if saved_scores is not None:
                    if saved_scores.shape != layer.scores.shape:
                        raise CheckpointError(f"the scores of layer {key!r} have the wrong shape")
                    layer.scores.copy_(saved_scores)
                else:  # scores that select exactly this mask under the method's own rule (made once)
                    made = prepared.scores.get(key)
                    if made is None:
                        made = method.scores_for(layer, mask)
                        prepared.scores[key] = made
                    _adopt(layer.scores, made)
                    rebuilt.add(name)
            if dry_run:
                _verify_masks(model, stored, rebuilt)


def _adopt(scores: torch.Tensor, made: torch.Tensor) -> None:
    """Make the placeholder ``scores`` hold ``made``: its very storage where they agree in shape, dtype and
    device (no copy, and none of the placeholder's pages ever touched: on some hosts first touches of fresh
    memory were most of a load's time), else a copy. The dry run's model and the real one share it; the
    dry run's is dropped."""
    if (
        made.shape == scores.shape
        and made.dtype == scores.dtype
        and made.device == scores.device
        and made.is_contiguous()
    ):
        scores.set_(made)  # type: ignore[call-overload]
    else:
        scores.copy_(made)


def _checksums(tensors: list[torch.Tensor]) -> list[str]:
    """:func:`checksum` of each tensor, on up to ``torch.get_num_threads()`` threads (hashlib frees the GIL)."""
    threads = min(torch.get_num_threads(), len(tensors), 16)
    if threads <= 1:
        return [checksum(t) for t in tensors]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(checksum, tensors))


def _verify_masks(model: nn.Module, stored: dict[str, torch.Tensor], rebuilt: set[str]) -> None:
    """Each layer's mask, selected now under the loaded config, must be the stored one, bit for bit
    (an edited k or method would select other weights: never run it). For scores the method rebuilt
    from the mask, the method may answer without selecting (:meth:`MaskMethod.selects_rebuilt`)."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for name, layer in supermask_layers(model):
                if name not in stored:
                    continue
                same = layer.method.selects_rebuilt(layer, stored[name]) if name in rebuilt else None
                if same is None:
                    same = torch.equal(layer.mask().cpu(), stored[name])
                if not same:
                    raise CheckpointError(
                        f"layer {name!r}: the mask selected under the checkpoint's config (method "
                        f"{layer.method.name!r}, k={layer.k}) is not the stored mask; the checkpoint is inconsistent"
                    )
    finally:
        model.train(was)


def _replaced_weights(model: nn.Module, meta: dict[str, Any]) -> dict[int, Any]:
    """A ``deepcopy`` memo that shares the weights of the layers the checkpoint converts with the trial
    copy instead of copying them (ResNet-50: 100 MB, a fifth of ``load``'s time): the conversion replaces
    those parameters and only reads them, never writes into them, so ``model`` stays untouched."""
    modules = dict(model.named_modules())
    memo: dict[int, Any] = {}
    for name, entry in meta["layers"].items():
        in_place = isinstance(entry, dict) and entry.get("in_place")
        owner_name, _, parameter = name.rpartition(".") if in_place else (name, "", "weight")
        module = modules.get(owner_name)
        weight = module._parameters.get(parameter) if module is not None else None
        if isinstance(weight, torch.Tensor) and not weight.is_meta:
            memo[id(weight)] = weight
    return memo


@outside_inference_mode
def load(directory: str | os.PathLike[str], model: nn.Module) -> nn.Module:
    """Convert ``model`` (the same architecture, unconverted) in place from a checkpoint; return it.

    All checks, a full trial conversion included, run on a copy first: on any error ``model`` is
    left unchanged. With task masks, the task that was active at ``save`` is active again.
    """
    _check_arguments("load(directory, model)", model, directory)
    meta, tensors = read_checkpoint(directory)
    if any(True for _ in supermask_layers(model)):
        raise CheckpointError("load() needs a fresh, unconverted model of the same architecture")
    prepared = _Prepared()
    try:
        trial = copy.deepcopy(model, _replaced_weights(model, meta))
        _apply(trial, meta, tensors, prepared)  # dry run: raises before `model` is touched
    except CheckpointError:
        raise
    except SupermaskError as exc:  # e.g. a config the model cannot be converted with
        raise CheckpointError(f"the checkpoint does not fit this model: {exc}") from exc
    prepared.done = True
    return _apply(model, meta, tensors, prepared)
