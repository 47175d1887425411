"""Turn a model into a supermask search (in place), change k, report sparsity, merge back.

Like peft's injection: every check runs before anything changes, and a config that matches no
module raises with the model untouched.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from supermask.core.config import SupermaskConfig, SupermaskConfigError, check_k
from supermask.core.init import generate_scores, generate_uniform, generate_weight
from supermask.core.layers import GlobalTopK, SupermaskConv, SupermaskLayer, SupermaskLinear
from supermask.core.masks import kept_count

SUPPORTED: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_WRAPPER = {nn.Linear: SupermaskLinear, nn.Conv1d: SupermaskConv, nn.Conv2d: SupermaskConv, nn.Conv3d: SupermaskConv}

# Modules holding weights that supermask cannot mask, and why.
_UNSUPPORTED_REASONS: tuple[tuple[type[nn.Module], str], ...] = (
    (
        nn.MultiheadAttention,
        "its packed in_proj_weight is read directly by F.multi_head_attention_forward "
        "(its out_proj Linear is converted)",
    ),
    (nn.Embedding, "embeddings are lookups, not weight matrices with a fan"),
    (nn.EmbeddingBag, "embeddings are lookups, not weight matrices with a fan"),
    (nn.RNNBase, "RNN/LSTM/GRU weights are flat parameters used by fused kernels"),
    (nn.modules.conv._ConvTransposeNd, "transposed convolutions are not supported yet"),
    (nn.Bilinear, "bilinear layers are not supported yet"),
)


class SupermaskError(RuntimeError):
    """A model or checkpoint cannot be converted or loaded; the message says why and what to do."""


@dataclass
class ConversionReport:
    """What :func:`to_supermask` did: converted, left dense, and skipped modules (with reasons)."""

    converted: list[str] = field(default_factory=list)
    left_dense: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (name, type, reason)
    batchnorm_non_affine: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"converted {len(self.converted)} layers"]
        if self.left_dense:
            lines.append(f"left dense (learned): {', '.join(self.left_dense)}")
        for name, kind, reason in self.skipped:
            lines.append(f"skipped {name} ({kind}): {reason}")
        return "\n".join(lines)


def _convertible_type(module: nn.Module) -> type[nn.Module] | None:
    for base in SUPPORTED:
        if isinstance(module, base) and type(module).forward is base.forward:
            return base
    return None


def _unsupported_reason(module: nn.Module) -> str | None:
    if isinstance(module, nn.modules.lazy.LazyModuleMixin) and module.has_uninitialized_params():
        return "lazy module with uninitialized parameters: run one forward pass before converting"
    for kind, reason in _UNSUPPORTED_REASONS:
        if isinstance(module, kind):
            return reason
    if _convertible_type(module) is None and isinstance(module, SUPPORTED):
        return f"{type(module).__name__} overrides forward(), so a wrapper would change its behaviour"
    return None


def _matches(name: str, module: nn.Module, spec: Any) -> bool:
    if spec is None:
        return False
    if isinstance(spec, str):
        return re.fullmatch(spec, name) is not None
    for item in spec:
        if isinstance(item, type) and isinstance(module, item):
            return True
        if isinstance(item, str):
            if item.startswith("type:"):
                if any(f"{t.__module__}.{t.__qualname__}" == item[5:] for t in type(module).__mro__):
                    return True
            elif name == item or name.endswith("." + item):
                return True
    return False


def _check_spec(spec: Any, field_name: str) -> None:
    if spec is None or isinstance(spec, str):
        if isinstance(spec, str):
            try:
                re.compile(spec)
            except re.error as exc:
                raise SupermaskConfigError(f"{field_name}={spec!r} is not a valid regular expression: {exc}") from exc
        return
    if not isinstance(spec, (list, tuple, set)) or not all(isinstance(i, (str, type)) for i in spec):
        raise SupermaskConfigError(
            f"{field_name} must be None, a regex string, or a list of module types and names; got {spec!r}"
        )


@dataclass
class _Plan:
    targets: list[tuple[str, Any]]
    report: ConversionReport
    batchnorms: list[tuple[str, Any]]


def _plan(model: nn.Module, cfg: SupermaskConfig) -> _Plan:
    cfg.validate()
    _check_spec(cfg.target_modules, "target_modules")
    _check_spec(cfg.exclude_modules, "exclude_modules")
    if any(isinstance(m, SupermaskLayer) for m in model.modules()):
        raise SupermaskError("the model is already converted; call to_supermask on an unconverted model")
    report = ConversionReport()
    targets: list[tuple[str, Any]] = []
    candidates: list[str] = []
    excluded: list[str] = []  # an excluded module excludes everything inside it
    for name, module in model.named_modules():
        if not name or any(name.startswith(e + ".") for e in excluded):
            continue
        base = _convertible_type(module)
        explicit = cfg.target_modules is not None and _matches(name, module, cfg.target_modules)
        wanted = explicit or (cfg.target_modules is None and base is not None)
        if _matches(name, module, cfg.exclude_modules):
            excluded.append(name)
            continue
        reason = _unsupported_reason(module)
        if reason is not None:
            if explicit and not isinstance(cfg.target_modules, str):
                raise SupermaskError(f"target {name!r} ({type(module).__name__}) cannot be converted: {reason}")
            if cfg.unsupported == "raise":
                raise SupermaskError(
                    f"module {name!r} ({type(module).__name__}) holds weights that cannot be masked: {reason}. "
                    "Exclude it with exclude_modules, or set unsupported='report' to leave it unchanged."
                )
            report.skipped.append((name, type(module).__name__, reason))
            continue
        if base is not None:
            candidates.append(name)
            if wanted:
                targets.append((name, module))
    if cfg.first_layer_dense and targets:
        report.left_dense.append(targets.pop(0)[0])
    if cfg.last_layer_dense and targets:
        report.left_dense.append(targets.pop()[0])
    if not targets:
        raise SupermaskError(
            "no module matched: target_modules="
            f"{cfg.target_modules!r}, exclude_modules={cfg.exclude_modules!r}. Convertible modules in this model: "
            f"{candidates[:20] or 'none (it has no nn.Linear or nn.Conv1d/2d/3d)'}"
        )
    if cfg.method == "edge-popup-global":
        _check_global_k(cfg.k, [int(m.weight.numel()) for _, m in targets])
    batchnorms: list[tuple[str, Any]] = []
    if cfg.batchnorm == "non_affine" and cfg.method != "dense":
        batchnorms = [
            (n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine
        ]
    report.converted = [n for n, _ in targets]
    report.batchnorm_non_affine = [n for n, _ in batchnorms]
    return _Plan(targets, report, batchnorms)


def _check_global_k(k: float, sizes: list[int]) -> None:
    """The global guard keeps one weight per layer, so k must keep at least as many as there are layers."""
    if kept_count(k, sum(sizes)) < len(sizes):
        raise SupermaskConfigError(
            f"k={k} keeps fewer weights than there are layers ({len(sizes)}); the global guard "
            "keeps at least one weight per layer, so raise k"
        )


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def to_supermask(
    model: nn.Module, config: SupermaskConfig | None = None, *, _weights: dict[str, torch.Tensor] | None = None
) -> nn.Module:
    """Convert ``model`` in place into a supermask search and return it.

    Each targeted layer is wrapped (:class:`~supermask.core.layers.SupermaskLinear` or
    :class:`~supermask.core.layers.SupermaskConv`): its weight is replaced by a deterministic frozen
    random weight, and trainable ``scores`` choose the kept subnetwork. ``model.supermask_config``
    and ``model.supermask_report`` record what was done. Raises before changing anything.
    """
    cfg = dataclasses.replace(config) if config is not None else SupermaskConfig()  # set_k must not edit the caller's
    plan = _plan(model, cfg)
    # Generate everything first: nothing is changed until all of it exists.
    new_tensors = []
    for name, module in plan.targets:
        shape = tuple(module.weight.shape)
        weight = _weights[name] if _weights is not None else generate_weight(name, shape, cfg, cfg.k)
        scores = None if cfg.method == "dense" else generate_scores(name, shape, cfg)
        new_tensors.append((weight, scores))

    wrappers: list[SupermaskLayer] = []
    for (name, module), (weight, scores) in zip(plan.targets, new_tensors):
        ref = module.weight
        module.weight = nn.Parameter(weight.to(device=ref.device, dtype=ref.dtype), requires_grad=cfg.method == "dense")
        if scores is not None:
            scores = scores.to(device=ref.device, dtype=ref.dtype)
        bias = module.bias
        if isinstance(bias, torch.Tensor):
            if cfg.bias == "zero":
                with torch.no_grad():
                    bias.zero_()
            bias.requires_grad_(cfg.bias == "learned")
        base = _convertible_type(module)
        assert base is not None
        eval_uniform = None
        if cfg.method == "bernoulli" and cfg.bernoulli_eval == "sample":
            eval_uniform = functools.partial(generate_uniform, name, tuple(module.weight.shape), cfg)
        wrapper = _WRAPPER[base](module, name, cfg.method, cfg.k, scores, eval_uniform)
        wrapper.train(module.training)
        _set_submodule(model, name, wrapper)
        wrappers.append(wrapper)
    if cfg.method == "edge-popup-global":
        group = GlobalTopK(wrappers, cfg.k)
        for w in wrappers:
            w.group = group
    for _, bn in plan.batchnorms:
        bn.affine = False
        bn.weight = None
        bn.bias = None
    model.supermask_config = cfg  # type: ignore[assignment,unused-ignore]
    model.supermask_report = plan.report  # type: ignore[assignment,unused-ignore]
    return model


def supermask_layers(model: nn.Module) -> list[tuple[str, Any]]:
    """(qualified name in the unconverted model, layer) for every converted layer."""
    return [(m.layer_name, m) for m in model.modules() if isinstance(m, SupermaskLayer)]


def get_config(model: nn.Module) -> SupermaskConfig:
    """The config a converted model was made with; a clear error for an unconverted model."""
    cfg = getattr(model, "supermask_config", None)
    if not isinstance(cfg, SupermaskConfig):
        raise SupermaskError("this model is not converted: call supermask.to_supermask(model, config) first")
    return cfg


def set_k(model: nn.Module, k: float) -> None:
    """Change the kept fraction of every converted layer (and the global top-k)."""
    check_k(k)
    cfg = get_config(model)
    if cfg.method in ("bernoulli", "dense"):
        raise SupermaskConfigError(f"k has no effect for method {cfg.method!r}; it is used by the edge-popup methods")
    layers = supermask_layers(model)
    if cfg.method == "edge-popup-global":
        _check_global_k(k, [int(layer.base_layer.weight.numel()) for _, layer in layers])
    for name, layer in layers:
        layer.k = k
        if layer.group is not None:
            layer.group.k = k
        if cfg.scale_fan:  # the weights' scale depends on k: regenerate them
            w = layer.base_layer.weight
            with torch.no_grad():
                w.copy_(generate_weight(name, tuple(w.shape), cfg, k))
    cfg.k = k


def sparsity_report(model: nn.Module) -> dict[str, Any]:
    """Per-layer kept/total of the converted layers, their sum, and the whole model's parameters.

    Returns ``{"layers": [{"name", "kept", "total", "fraction"}], "converted": {...}, "model": {...}}``
    where ``model`` counts every parameter and frozen weight, unconverted ones as kept.
    """
    rows = []
    for name, layer in supermask_layers(model):
        with torch.no_grad():
            was = layer.training
            layer.eval()
            kept = int(layer.mask().sum())
            layer.train(was)
        total = layer.base_layer.weight.numel()
        rows.append({"name": name, "kept": kept, "total": total, "fraction": kept / total})
    kept_c = sum(r["kept"] for r in rows)
    total_c = sum(r["total"] for r in rows)
    converted_ids = {id(layer.base_layer.weight) for _, layer in supermask_layers(model)}
    scores_ids = {id(layer.scores) for _, layer in supermask_layers(model)}
    other = sum(p.numel() for p in model.parameters() if id(p) not in converted_ids and id(p) not in scores_ids)
    return {
        "layers": rows,
        "converted": {"kept": kept_c, "total": total_c, "fraction": kept_c / total_c if total_c else 1.0},
        "model": {"kept": kept_c + other, "total": total_c + other, "fraction": (kept_c + other) / (total_c + other)},
    }


def merge(model: nn.Module) -> nn.Module:
    """Fold every mask into its weight and put the plain modules back (in place); return the model.

    The result is an ordinary PyTorch model (no supermask classes) with identical outputs.
    """
    get_config(model)
    layers = supermask_layers(model)
    was = model.training
    model.eval()
    with torch.no_grad():
        merged = [(name, layer.base_layer, layer.effective_weight().detach().clone()) for name, layer in layers]
    model.train(was)
    for name, base, weight in merged:  # base: nn.Linear / nn.ConvNd
        base.weight = nn.Parameter(weight)
        if isinstance(base.bias, torch.Tensor):
            base.bias.requires_grad_(True)
        _set_submodule(model, name, base)
    del model.supermask_config
    del model.supermask_report
    return model
