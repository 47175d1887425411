"""Turn a model into a supermask search (in place), change k, report sparsity, merge back.

Like peft's injection: every check runs before anything changes, and a config that matches no
module raises with the model untouched.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from supermask.core.config import SupermaskConfig, check_k
from supermask.core.init import generate_weight
from supermask.core.layers import SupermaskConv, SupermaskConv1D, SupermaskLayer, SupermaskLinear
from supermask.core.masks import outside_inference_mode
from supermask.core.methods import MaskMethod, create_method, method_class, method_names, scale_fan_problem
from supermask.errors import SupermaskConfigError, SupermaskError

SUPPORTED: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_WRAPPER: dict[type[nn.Module], type[SupermaskLayer]] = {
    nn.Linear: SupermaskLinear,
    nn.Conv1d: SupermaskConv,
    nn.Conv2d: SupermaskConv,
    nn.Conv3d: SupermaskConv,
}
_NORMS: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.batchnorm._NormBase,
    nn.LocalResponseNorm,
    getattr(nn, "RMSNorm", nn.LayerNorm),
)

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

_SCRIPTED = (
    "TorchScript module (torch.jit.script / trace), whose submodules are compiled code: convert the original "
    "nn.Module, then script the result if you need TorchScript"
)


def _hf_conv1d_base(module: nn.Module) -> type[nn.Module] | None:
    """transformers' ``Conv1D`` class if ``module`` is one (found by name: transformers is never imported)."""
    for cls in type(module).__mro__:
        if cls.__name__ == "Conv1D" and cls.__module__.startswith("transformers."):
            return cls
    return None


@dataclass
class UnconvertedEntry:
    """A module or raw parameter holding weights that was not converted, and what happens to it."""

    name: str
    kind: str  # the module's type, or "Parameter" for a raw nn.Parameter
    values: int
    reason: str
    trainable: bool


@dataclass
class ConversionReport:
    """What :func:`to_supermask` did: converted layers, and every module or parameter holding weights
    that was not converted (with the reason and whether it trains), then the trainable parameter count."""

    converted: list[str] = field(default_factory=list)
    left_dense: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (name, type, reason): unsupported
    batchnorm_non_affine: list[str] = field(default_factory=list)
    aliases: dict[str, list[str]] = field(default_factory=dict)  # converted layer -> its other names
    unconverted: list[UnconvertedEntry] = field(default_factory=list)
    converted_weights: int = 0
    trainable_parameters: int = 0
    score_parameters: int = 0
    total_parameters: int = 0

    def __str__(self) -> str:
        lines = [f"converted {len(self.converted)} layers ({self.converted_weights:,} weights)"]
        for name, others in self.aliases.items():
            lines.append(f"  {name} is also reached as {', '.join(others)} (one wrapper: masked on every path)")
        if self.unconverted:
            lines.append(f"not converted ({len(self.unconverted)}):")
            for e in self.unconverted:
                state = "trainable" if e.trainable else "frozen"
                lines.append(f"  {e.name} ({e.kind}, {e.values:,} values, {state}): {e.reason}")
        share = 100.0 * self.trainable_parameters / self.total_parameters if self.total_parameters else 0.0
        lines.append(
            f"trainable params: {self.trainable_parameters:,} (scores {self.score_parameters:,}, "
            f"other {self.trainable_parameters - self.score_parameters:,}) || all params: "
            f"{self.total_parameters:,} || trainable%: {share:.4f}"
        )
        return "\n".join(lines)


def _convertible_type(module: nn.Module) -> type[nn.Module] | None:
    for base in SUPPORTED:
        if isinstance(module, base) and type(module).forward is base.forward:
            return base
    hf = _hf_conv1d_base(module)
    if hf is not None and type(module).forward is hf.forward:
        return hf
    return None


def _wrapper_class(base: type[nn.Module]) -> type[SupermaskLayer]:
    return _WRAPPER.get(base, SupermaskConv1D)


def _unsupported_reason(module: nn.Module) -> str | None:
    if isinstance(module, torch.jit.ScriptModule) and next(module.parameters(recurse=False), None) is not None:
        return f"a {_SCRIPTED}"
    if isinstance(module, nn.modules.lazy.LazyModuleMixin) and module.has_uninitialized_params():
        return "lazy module with uninitialized parameters: run one forward pass before converting"
    for kind, reason in _UNSUPPORTED_REASONS:
        if isinstance(module, kind):
            return reason
    weighted = isinstance(module, SUPPORTED) or _hf_conv1d_base(module) is not None
    if weighted and _convertible_type(module) is None:
        return f"{type(module).__name__} overrides forward(), so a wrapper would change its behaviour"
    if weighted and parametrize.is_parametrized(module):
        return "its weight is computed by a parametrization (torch.nn.utils.parametrize)"
    if weighted and (module._forward_pre_hooks or module._forward_hooks):
        return "it has forward hooks (e.g. torch.nn.utils.prune or weight_norm), which a wrapper would bypass"
    if weighted and not isinstance(getattr(module, "weight", None), nn.Parameter):
        return "its weight is not an nn.Parameter"
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


@dataclass
class _Plan:
    targets: list[tuple[str, Any]]
    report: ConversionReport
    batchnorms: list[tuple[str, Any]]
    names: dict[int, list[str]]  # id(module) -> every name it is registered under
    method: MaskMethod


def _all_names(model: nn.Module) -> dict[int, list[str]]:
    """id(module) -> all qualified names of that module (a shared module has several)."""
    names: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), []).append(name)
    return names


def _parameter_owners(model: nn.Module) -> dict[int, list[tuple[nn.Module, str]]]:
    """id(parameter) -> every (module, qualified parameter name) holding it directly, in module order."""
    owners: dict[int, list[tuple[nn.Module, str]]] = {}
    for name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            owners.setdefault(id(p), []).append((module, f"{name}.{pname}" if name else pname))
    return owners


def _tied_elsewhere(owners: dict[int, list[tuple[nn.Module, str]]], module: nn.Module) -> str | None:
    """The name of another module's parameter that is ``module.weight`` itself (tied weights), if any."""
    return next((name for other, name in owners.get(id(module.weight), []) if other is not module), None)


def _plan(model: nn.Module, cfg: SupermaskConfig) -> _Plan:
    cfg.validate()
    if any(isinstance(m, SupermaskLayer) for m in model.modules()):
        raise SupermaskError("the model is already converted; call to_supermask on an unconverted model")
    names = _all_names(model)
    owners = _parameter_owners(model)
    report = ConversionReport()
    targets: list[tuple[str, Any]] = []
    candidates: list[str] = []
    excluded: list[str] = []  # an excluded module excludes everything inside it, under any of its names
    for name, module in model.named_modules():
        if not name:
            continue
        aliases = names[id(module)]
        if any(_matches(a, module, cfg.exclude_modules) for a in aliases):
            excluded.extend(aliases)
            continue
        if any(a.startswith(e + ".") for a in aliases for e in excluded):
            continue
        base = _convertible_type(module)
        explicit = cfg.target_modules is not None and any(_matches(a, module, cfg.target_modules) for a in aliases)
        wanted = explicit or (cfg.target_modules is None and base is not None)
        reason = _unsupported_reason(module)
        if reason is None and base is not None and wanted:
            tied = _tied_elsewhere(owners, module)
            if tied is not None:
                reason = f"its weight is tied to {tied} (one shared parameter): masking it would untie them"
        if reason is not None:
            if explicit and not isinstance(cfg.target_modules, str):
                raise SupermaskError(f"target {name!r} ({type(module).__name__}) cannot be converted: {reason}")
            if cfg.unsupported == "raise" and (wanted or base is None):
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
        raise SupermaskError(_nothing_to_convert(model, cfg, candidates, report))
    method = create_method(cfg)
    method.check([int(m.weight.numel()) for _, m in targets], cfg.k)
    if cfg.weight_init == "pretrained":
        _check_pretrained(model, cfg, targets, method)
    batchnorms: list[tuple[str, Any]] = []
    if cfg.batchnorm == "non_affine" and method.has_scores:
        batchnorms = [
            (n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine
        ]
    report.converted = [n for n, _ in targets]
    report.converted_weights = sum(int(m.weight.numel()) for _, m in targets)
    report.aliases = {n: names[id(m)][1:] for n, m in targets if len(names[id(m)]) > 1}
    report.batchnorm_non_affine = [n for n, _ in batchnorms]
    return _Plan(targets, report, batchnorms, names, method)


def _nothing_to_convert(model: nn.Module, cfg: SupermaskConfig, candidates: list[str], report: ConversionReport) -> str:
    """Why no module was converted: what matched, what was left dense, and what was skipped and why."""
    parts = [f"no module matched: target_modules={cfg.target_modules!r}, exclude_modules={cfg.exclude_modules!r}."]
    if isinstance(model, torch.jit.ScriptModule):
        parts.append(f"The model is a {_SCRIPTED}.")
        return " ".join(parts)
    root_reason = _unsupported_reason(model)
    if root_reason is not None:
        parts.append(f"The model is itself a {type(model).__name__}, which cannot be masked: {root_reason}.")
        return " ".join(parts)
    if _convertible_type(model) is not None:
        parts.append(
            f"The model is itself a {type(model).__name__}: to_supermask converts the modules inside a model "
            "(in place), so wrap it: nn.Sequential(model)."
        )
        return " ".join(parts)
    if candidates:
        parts.append(f"Convertible modules in this model: {candidates[:20]}.")
    if report.left_dense:
        parts.append(f"Left dense by first_layer_dense / last_layer_dense: {report.left_dense}.")
    if report.skipped:
        shown = "; ".join(f"{name!r} ({kind}): {reason}" for name, kind, reason in report.skipped[:5])
        more = f" (and {len(report.skipped) - 5} more)" if len(report.skipped) > 5 else ""
        parts.append(f"Modules with weights that were left as they are: {shown}{more}.")
    if not candidates and not report.skipped:
        parts.append("It has no nn.Linear, nn.Conv1d/2d/3d or transformers Conv1D.")
    return " ".join(parts)


def _check_pretrained(model: nn.Module, cfg: SupermaskConfig, targets: list[tuple[str, Any]], method: Any) -> None:
    """Masks over trained weights must not destroy them: no zeroed biases, no dropped BatchNorm affines."""
    if cfg.bias == "zero" and any(isinstance(getattr(m, "bias", None), torch.Tensor) for _, m in targets):
        raise SupermaskConfigError(
            "weight_init='pretrained' with bias='zero' would zero the pretrained biases; set bias='frozen' "
            "(keep them) or bias='learned'"
        )
    affine = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]
    if cfg.batchnorm == "non_affine" and method.has_scores and affine:
        raise SupermaskConfigError(
            f"weight_init='pretrained' with batchnorm='non_affine' would drop the pretrained BatchNorm affine "
            f"parameters (of {affine[0]!r}, ...); set batchnorm='learned'"
        )


def _unconverted(model: nn.Module, plan: _Plan, cfg: SupermaskConfig) -> list[tuple[UnconvertedEntry, list[Any]]]:
    """Every module or raw parameter that holds weights and is not converted: its entry and its parameters.

    A converted layer's bias follows ``bias`` and a BatchNorm's affine parameters follow ``batchnorm``
    (both listed, as governed by them); layers left dense learn; everything else follows ``unconverted``.
    """
    converted = {id(m) for _, m in plan.targets}
    dropped = {id(m) for _, m in plan.batchnorms}
    skipped = {name: reason for name, _, reason in plan.report.skipped}
    excluded_by = cfg.exclude_modules
    learn = cfg.unconverted == "learn"
    out: list[tuple[UnconvertedEntry, list[Any]]] = []
    seen: set[int] = set()
    for name, module in model.named_modules():
        if id(module) in converted or id(module) in dropped:
            seen.update(id(p) for p in module.parameters(recurse=False))
            continue
        params = list(module.named_parameters(recurse=False))
        fresh = [p for _, p in params if id(p) not in seen]
        seen.update(id(p) for p in fresh)
        if not fresh and name not in skipped:  # a module's tied parameters are listed under it too when it was skipped
            continue
        kind = type(module).__name__
        trainable = learn
        if name in skipped:
            reason = skipped[name]
        elif name in plan.report.left_dense:
            reason, trainable = "left dense by first_layer_dense/last_layer_dense (learned)", True
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            reason = "BatchNorm affine parameters (batchnorm='learned')"
            if not plan.method.has_scores:
                reason = f"BatchNorm affine parameters (method {cfg.method!r} learns them)"
            trainable = True
        elif excluded_by is not None and any(_matches(a, module, excluded_by) for a in plan.names[id(module)]):
            reason = "excluded by exclude_modules"
        elif _convertible_type(module) is not None:
            reason = "not matched by target_modules, or inside an excluded module"
        elif isinstance(module, _NORMS):
            reason = "a normalisation layer (its weights scale features; they are not a weight matrix)"
        elif list(module.children()):  # a container's own parameters: raw nn.Parameters
            for pname, p in params:
                if not any(p is q for q in fresh):
                    continue
                full = f"{name}.{pname}" if name else pname
                reason = f"a raw nn.Parameter of {kind}, not a layer supermask converts"
                out.append((UnconvertedEntry(full, "Parameter", _numel(p), reason, learn), [p]))
            continue
        else:
            reason = f"{kind} is not a layer supermask converts (Linear, Conv1d/2d/3d, transformers Conv1D)"
        values = sum(_numel(p) for _, p in params)
        out.append((UnconvertedEntry(name or "(model)", kind, values, reason, trainable), [p for _, p in params]))
    return out


def _numel(p: Any) -> int:
    """Number of values of a parameter (0 while a lazy module's parameter is uninitialized)."""
    return 0 if isinstance(p, nn.parameter.UninitializedParameter) else int(p.numel())


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _replace_everywhere(model: nn.Module, names: list[str], new: nn.Module) -> None:
    """Register ``new`` under every name the old module had (a shared module stays shared)."""
    for name in names:
        _set_submodule(model, name, new)


def _checked_scores(method: MaskMethod, name: str, shape: tuple[int, ...], scores: Any) -> torch.Tensor | None:
    """A method's initial scores for layer ``name``, refused (before the model changes) unless they are
    None where the method has no scores, else a finite float tensor of the weight's shape."""
    if scores is None and not method.has_scores:
        return None
    if not (
        isinstance(scores, torch.Tensor)
        and tuple(scores.shape) == shape
        and scores.is_floating_point()
        and bool(torch.isfinite(scores).all())
    ):
        if isinstance(scores, torch.Tensor):
            got = f"a {scores.dtype} tensor of shape {tuple(scores.shape)}"
            if tuple(scores.shape) == shape and scores.is_floating_point():
                got += " with NaN or infinite values"
        else:
            got = type(scores).__name__
        raise SupermaskError(
            f"method {method.name!r}: initial_scores() gave {got} for layer {name!r}; scores must be finite "
            f"floats of the weight's shape {shape}"
        )
    return scores


@outside_inference_mode
def to_supermask(
    model: nn.Module,
    config: SupermaskConfig | None = None,
    *,
    _weights: dict[str, torch.Tensor] | None = None,
    _initial_scores: bool = True,
) -> nn.Module:
    """Convert ``model`` in place into a supermask search and return it.

    Each targeted layer is wrapped (:class:`~supermask.core.layers.SupermaskLinear`,
    :class:`~supermask.core.layers.SupermaskConv` or, for transformers' ``Conv1D``,
    :class:`~supermask.core.layers.SupermaskConv1D`): its weight is replaced by a deterministic frozen
    random weight, and trainable ``scores`` choose the kept subnetwork. A module registered under
    several names gets one wrapper, reached from each name. Every other parameter is listed in
    ``model.supermask_report`` and frozen or left trainable as ``config.unconverted`` says.
    ``model.supermask_config`` records the config. Raises before changing anything.
    """
    cfg = dataclasses.replace(config) if config is not None else SupermaskConfig()  # set_k must not edit the caller's
    on_meta = [name for name, p in itertools.chain(model.named_parameters(), model.named_buffers()) if p.is_meta]
    if on_meta:
        raise SupermaskError(
            f"{len(on_meta)} parameter(s)/buffer(s) are on the meta device and hold no values (first: {on_meta[0]!r}): "
            "materialise the model first (load its weights, or model.to_empty(device=...) and initialise it), "
            "then convert"
        )
    plan = _plan(model, cfg)
    method = plan.method
    problem = scale_fan_problem(method)
    if problem and _initial_scores:  # a new conversion (a saved one, scores from its masks or state, still loads)
        raise SupermaskConfigError(problem)
    # Generate everything first: nothing is changed until all of it exists.
    new_tensors = []
    for name, module in plan.targets:
        shape = tuple(module.weight.shape)
        wrapper_cls = _wrapper_class(_convertible_type(module))  # type: ignore[arg-type]
        fan_shape = shape[::-1] if wrapper_cls is SupermaskConv1D else shape
        if _weights is not None:
            weight = _weights[name]
        elif cfg.weight_init == "pretrained":
            weight = module.weight.detach().clone()  # masks over the model's own weights
        else:
            weight = generate_weight(name, shape, cfg, cfg.k, fan_shape)
        if _initial_scores:
            scores = _checked_scores(method, name, shape, method.initial_scores(name, shape, fan_shape))
        else:  # a checkpoint's masks set every one of them next (load): placeholders, nothing drawn or zeroed
            scores = torch.empty(shape) if method.has_scores else None
        banks: list[torch.Tensor] | None = None
        if cfg.tasks > 1 and scores is not None:  # task t > 0 draws its own scores (task 0's are the plain ones)
            others = [
                _checked_scores(method, name, shape, method.initial_scores(f"{name}@task{t}", shape, fan_shape))
                if _initial_scores
                else torch.empty(shape)
                for t in range(1, cfg.tasks)
            ]
            banks = [scores, *[s for s in others if s is not None]]
        new_tensors.append((wrapper_cls, weight, scores, banks))
    unconverted = _unconverted(model, plan, cfg)

    wrappers: list[SupermaskLayer] = []
    for (name, module), (wrapper_cls, weight, scores, banks) in zip(plan.targets, new_tensors):
        ref = module.weight
        trains_weight = not method.has_scores
        module.weight = nn.Parameter(weight.to(device=ref.device, dtype=ref.dtype), requires_grad=trains_weight)
        if scores is not None:
            scores = scores.to(device=ref.device, dtype=ref.dtype)
        bias = module.bias
        if isinstance(bias, torch.Tensor):
            if cfg.bias == "zero":
                with torch.no_grad():
                    bias.zero_()
            bias.requires_grad_(cfg.bias == "learned")
        if banks is not None:
            banks = [b.to(device=ref.device, dtype=ref.dtype) for b in banks]
        wrapper = wrapper_cls(module, name, method, cfg.k, scores, banks)
        wrapper.train(module.training)
        _replace_everywhere(model, plan.names[id(module)], wrapper)
        wrappers.append(wrapper)
    method.setup(wrappers)
    for _, bn in plan.batchnorms:
        bn.affine = False
        bn.weight = None
        bn.bias = None
    for entry, params in unconverted:
        for p in params:
            p.requires_grad = entry.trainable  # (not requires_grad_(): lazy parameters refuse calls)
    report = plan.report
    report.unconverted = [entry for entry, _ in unconverted]
    report.score_parameters = sum(int(w.scores.numel()) * w.tasks for w in wrappers if w.scores is not None)
    report.trainable_parameters = sum(_numel(p) for p in model.parameters() if p.requires_grad)
    report.total_parameters = sum(_numel(p) for p in model.parameters())
    model.supermask_config = cfg  # type: ignore[assignment,unused-ignore]
    model.supermask_report = report  # type: ignore[assignment,unused-ignore]
    model.register_load_state_dict_post_hook(_config_k_from_layers)
    if callable(getattr(model, "save_pretrained", None)):  # a Hugging Face model
        model.save_pretrained = refuse_save_pretrained  # type: ignore[assignment,unused-ignore]
    return model


def _config_k_from_layers(model: nn.Module, incompatible: Any) -> None:
    """After ``load_state_dict``: the model's config takes the k its layers now hold (from their
    ``_extra_state``), so that ``get_config``, ``save`` and reports agree with the network."""
    cfg = getattr(model, "supermask_config", None)
    ks = {layer.k for _, layer in supermask_layers(model)}
    if isinstance(cfg, SupermaskConfig) and len(ks) == 1:
        cfg.k = ks.pop()


def refuse_save_pretrained(*args: Any, **kwargs: Any) -> None:
    """Stands in for transformers' ``save_pretrained`` on a converted, unmerged model: what it would write
    (wrappers, scores, regenerable weights) reloads with ``from_pretrained`` as a model of random weights."""
    raise SupermaskError(
        "save_pretrained on a converted, unmerged model would write a model that from_pretrained reloads "
        "with random weights. Save the masks with supermask.save(model, dir) (1 bit per weight; reload with "
        "supermask.load), or call supermask.merge(model) first and save_pretrained the plain masked model. "
        "With the Hugging Face Trainer, set save_strategy='no' and save with supermask.save"
    )


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
    layers = supermask_layers(model)
    method = layers[0][1].method
    if not method.uses_k:
        users = ", ".join(n for n in method_names() if method_class(n).uses_k)
        raise SupermaskConfigError(f"k has no effect for method {cfg.method!r}; it is used by: {users}")
    method.check([int(layer.base_layer.weight.numel()) for _, layer in layers], k)
    rebuilt: dict[str, torch.Tensor] = {}
    if cfg.scale_fan and cfg.weight_init != "pretrained":  # the weights' scale depends on k: regenerate them
        for name, layer in layers:  # all made before any is changed
            w = layer.base_layer.weight
            fresh = generate_weight(name, tuple(w.shape), cfg, k, layer.fan_shape())
            rebuilt[name] = method.rebuild_weight(layer, fresh, k)  # with what training re-drew (IteRand)
    for name, layer in layers:
        layer.k = k
        if name in rebuilt:
            with torch.no_grad():
                layer.base_layer.weight.copy_(rebuilt[name])
    cfg.k = k


def sparsity_report(model: nn.Module) -> dict[str, Any]:
    """Per-layer kept/total of the converted layers, their sum, and the whole model's parameters.

    Returns ``{"layers": [{"name", "kept", "total", "fraction"}], "converted": {...}, "model": {...}}``
    where ``model`` counts every parameter and frozen weight, unconverted ones as kept.
    """
    rows = []
    for name, layer in supermask_layers(model):
        kept = layer.method.kept(_eval_mask(layer)) if layer.method.has_scores else int(layer.base_layer.weight.numel())
        total = layer.base_layer.weight.numel()
        rows.append({"name": name, "kept": kept, "total": total, "fraction": kept / total})
    kept_c = sum(r["kept"] for r in rows)
    total_c = sum(r["total"] for r in rows)
    converted_ids = {id(layer.base_layer.weight) for _, layer in supermask_layers(model)}
    scores_ids = {id(p) for _, layer in supermask_layers(model) for p in layer.score_parameters()}  # every task's
    other = sum(p.numel() for p in model.parameters() if id(p) not in converted_ids and id(p) not in scores_ids)
    return {
        "layers": rows,
        "converted": {"kept": kept_c, "total": total_c, "fraction": kept_c / total_c if total_c else 1.0},
        "model": {"kept": kept_c + other, "total": total_c + other, "fraction": (kept_c + other) / (total_c + other)},
    }


def _eval_mask(layer: Any) -> torch.Tensor:
    """The layer's evaluation mask (a stochastic method's fixed draw), its training mode restored."""
    was = layer.training
    layer.eval()
    try:
        with torch.no_grad():
            return layer.mask().detach()
    finally:
        layer.train(was)


def silent_outputs(model: nn.Module) -> list[dict[str, Any]]:
    """Converted layers where more than half of the outputs have no kept weight at all, so they carry no
    signal (e.g. a global top-k at a small k leaving a layer of large fan almost empty). Each row:
    ``{"name", "kept", "total", "outputs", "silent"}``."""
    rows = []
    for name, layer in supermask_layers(model):
        if not layer.method.has_scores:
            continue
        mask = _eval_mask(layer)
        outputs = layer.fan_shape()[0]
        # the (out, in, ...) layout; transformers' Conv1D stores its weight transposed, (in, out)
        by_output = (
            mask.reshape(outputs, -1) if tuple(mask.shape) == layer.fan_shape() else mask.reshape(-1, outputs).t()
        )
        silent = int((by_output == 0).all(dim=1).sum())
        if 2 * silent > outputs:
            kept, total = layer.method.kept(mask), mask.numel()
            rows.append({"name": name, "kept": kept, "total": total, "outputs": outputs, "silent": silent})
    return rows


@outside_inference_mode
def merge(model: nn.Module) -> nn.Module:
    """Fold every mask into its weight and put the plain modules back (in place); return the model.

    The result is an ordinary PyTorch model (no supermask classes) with identical outputs.
    """
    get_config(model)
    layers = supermask_layers(model)
    was = model.training
    model.eval()
    try:  # everything computed before anything is replaced; a failure leaves the model as it was
        with torch.no_grad():
            merged = [(name, layer.base_layer, layer.effective_weight().detach().clone()) for name, layer in layers]
    finally:
        model.train(was)
    names = _all_names(model)
    for (_, layer), (_, base, weight) in zip(layers, merged):  # base: nn.Linear / nn.ConvNd / Conv1D
        base.weight = nn.Parameter(weight)
        if isinstance(base.bias, torch.Tensor):
            base.bias.requires_grad_(True)
        _replace_everywhere(model, names[id(layer)], base)
    del model.supermask_config
    del model.supermask_report
    if model.__dict__.get("save_pretrained") is refuse_save_pretrained:
        del model.__dict__["save_pretrained"]  # the class's own save_pretrained again
    return model
