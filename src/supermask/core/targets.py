"""Which modules a conversion wraps: target selection (types, names, regexes, exclusions, tied and
unsupported weights), the conversion report, and :func:`plan_conversion`, step 1 of a conversion,
which checks everything and changes nothing (like peft's injection: a config that matches no module
raises with the model untouched)."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from supermask.core.config import SupermaskConfig
from supermask.core.layers import SupermaskConv, SupermaskConv1D, SupermaskLayer, SupermaskLinear
from supermask.core.methods import MaskMethod, create_method
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
    (nn.Embedding, "embeddings are lookups, not weight matrices with a fan"),
    (nn.EmbeddingBag, "embeddings are lookups, not weight matrices with a fan"),
    (nn.RNNBase, "RNN/LSTM/GRU weights are flat parameters used by fused kernels"),
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
    in_place: list[str] = field(default_factory=list)  # converted parameters masked in place (their module kept)
    unconverted: list[UnconvertedEntry] = field(default_factory=list)
    converted_weights: int = 0
    trainable_parameters: int = 0
    score_parameters: int = 0
    total_parameters: int = 0

    def __str__(self) -> str:
        lines = [f"converted {len(self.converted)} layers ({self.converted_weights:,} weights)"]
        for name, others in self.aliases.items():
            lines.append(f"  {name} is also reached as {', '.join(others)} (one wrapper: masked on every path)")
        if self.in_place:
            shown = ", ".join(self.in_place[:6]) + (
                f" (and {len(self.in_place) - 6} more)" if len(self.in_place) > 6 else ""
            )
            lines.append(f"  masked in place, read by their module's own forward: {shown}")
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


def convertible_type(module: nn.Module) -> type[nn.Module] | None:
    for base in SUPPORTED:
        if isinstance(module, base) and type(module).forward is base.forward:
            return base
    hf = _hf_conv1d_base(module)
    if hf is not None and type(module).forward is hf.forward:
        return hf
    return None


def wrapper_class(base: type[nn.Module]) -> type[SupermaskLayer]:
    return _WRAPPER.get(base, SupermaskConv1D)


def _unsupported_reason(module: nn.Module) -> str | None:
    if isinstance(module, torch.jit.ScriptModule) and next(module.parameters(recurse=False), None) is not None:
        return f"a {_SCRIPTED}"
    if isinstance(module, nn.modules.lazy.LazyModuleMixin) and module.has_uninitialized_params():
        return "lazy module with uninitialized parameters: run one forward pass before converting"
    for kind, reason in _UNSUPPORTED_REASONS:
        if isinstance(module, kind):
            return reason
    weighted = isinstance(module, SUPPORTED) or _hf_conv1d_base(module) is not None or bool(parameter_specs(module))
    if weighted and parametrize.is_parametrized(module):
        return "its weight is computed by a parametrization (torch.nn.utils.parametrize)"
    if weighted and (module._forward_pre_hooks or module._forward_hooks):
        return "it has forward hooks (e.g. torch.nn.utils.prune or weight_norm), which a wrapper would bypass"
    if weighted and not all(isinstance(module._parameters.get(n), nn.Parameter) for n, _ in _weight_names(module)):
        return "its weight is not an nn.Parameter"
    return None


def _weight_names(module: nn.Module) -> list[tuple[str, str | None]]:
    if convertible_type(module) is not None:
        return [("weight", "bias")]
    return [(name, bias) for name, bias, _ in parameter_specs(module)]


def parameter_specs(module: nn.Module) -> list[tuple[str, str | None, bool]]:
    """The parameters of ``module`` that are masked in place (its forward reads them itself), as
    (parameter, its bias or None, fan transposed): ``nn.MultiheadAttention``'s in-projection(s),
    a transposed convolution's weight, and the weight of a Linear, Conv or transformers ``Conv1D``
    subclass with a forward of its own (timm's ``StdConv2d``, ``Conv2dSame``, ``Linear``). Empty for a
    module that is wrapped whole (:func:`convertible_type`) or holds no such weight."""
    if isinstance(module, nn.MultiheadAttention):
        if module._qkv_same_embed_dim:
            return [("in_proj_weight", "in_proj_bias", False)]
        return [
            ("q_proj_weight", "in_proj_bias", False),
            ("k_proj_weight", None, False),
            ("v_proj_weight", None, False),
        ]
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return [("weight", "bias", False)]
    if convertible_type(module) is None and isinstance(module, SUPPORTED):
        return [("weight", "bias", False)]
    if convertible_type(module) is None and _hf_conv1d_base(module) is not None:
        return [("weight", "bias", True)]
    return []


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
class ParameterTarget:
    """One parameter masked in place (:class:`~supermask.core.layers.SupermaskParameter`)."""

    name: str  # qualified parameter name: the layer's name in reports and checkpoints
    owner: nn.Module
    parameter: str
    bias: str | None  # the owner's parameter that ``SupermaskConfig.bias`` governs with it
    fan: tuple[int, ...]  # the shape its fans are computed from, PyTorch's (out, in, *kernel) layout

    @property
    def weight(self) -> nn.Parameter:
        return self.owner._parameters[self.parameter]  # type: ignore[return-value]


@dataclass
class ConversionPlan:
    """What :func:`plan_conversion` decided, before anything changes: the layers to wrap, the BatchNorms
    that lose their affine parameters, every other parameter and what happens to it, and the method."""

    config: SupermaskConfig
    targets: list[tuple[str, Any]]
    report: ConversionReport
    batchnorms: list[tuple[str, Any]]
    names: dict[int, list[str]]  # id(module) -> every name it is registered under
    method: MaskMethod
    unconverted: list[tuple[UnconvertedEntry, list[Any]]] = field(default_factory=list)
    parameters: list[ParameterTarget] = field(default_factory=list)  # masked in place


def all_names(model: nn.Module) -> dict[int, list[str]]:
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


def _tied_elsewhere(
    owners: dict[int, list[tuple[nn.Module, str]]], module: nn.Module, parameters: list[str] | None = None
) -> str | None:
    """The name of another module's parameter that is one of ``module``'s weights (tied weights), if any."""
    for pname in parameters or ["weight"]:
        p = module._parameters.get(pname)
        if p is None:
            continue
        other = next((n for m, n in owners.get(id(p), []) if m is not module), None)
        if other is not None:
            return other
    return None


def fan_of(owner: nn.Module, parameter: str) -> tuple[int, ...]:
    """The shape from which the fans of ``owner``'s parameter ``parameter``, masked in place, are computed."""
    shape = tuple(owner._parameters[parameter].shape)  # type: ignore[union-attr]
    transposed = any(t for n, _, t in parameter_specs(owner) if n == parameter)
    return shape[::-1] if transposed else shape


def _parameter_target(name: str, owner: nn.Module, pname: str, bias: str | None, transposed: bool) -> ParameterTarget:
    shape = tuple(owner._parameters[pname].shape)  # type: ignore[union-attr]
    return ParameterTarget(name, owner, pname, bias, shape[::-1] if transposed else shape)


def _named_parameters(
    model: nn.Module,
    cfg: SupermaskConfig,
    names: dict[int, list[str]],
    excluded: list[str],
    planned: set[tuple[int, str]],
    wrapped: set[int],
    owners: dict[int, list[tuple[nn.Module, str]]],
) -> list[ParameterTarget]:
    """The parameters ``target_parameters`` names (exact or dotted-suffix names, or one regex string), each
    checked: a float tensor of two or more dimensions, not tied, not inside an excluded module. A name in a
    list that matches no parameter is an error (a typo would otherwise leave the tensor dense)."""
    spec = cfg.target_parameters
    if spec is None:
        return []
    found: list[ParameterTarget] = []
    used: set[str] = set()
    for module in model.modules():
        aliases = names[id(module)]
        if any(a == e or a.startswith(e + ".") for a in aliases for e in excluded):
            continue
        for pname, p in module._parameters.items():
            if p is None:
                continue
            qualified = [f"{a}.{pname}" if a else pname for a in aliases]
            matched = [
                item
                for item in ([spec] if isinstance(spec, str) else spec)
                if any(
                    (re.fullmatch(item, q) is not None)
                    if isinstance(spec, str)
                    else (q == item or q.endswith("." + item))
                    for q in qualified
                )
            ]
            if not matched:
                continue
            used.update(matched)
            where = qualified[0]
            if (id(module), pname) in planned:
                continue  # masked in place already (an in-projection named twice)
            if id(module) in wrapped and pname == "weight":
                continue  # its module is wrapped whole
            if id(module) in wrapped or isinstance(module, SupermaskLayer):
                raise SupermaskError(f"target_parameters: {where!r} belongs to a converted layer; name its weight only")
            if p.dim() < 2 or not p.is_floating_point():
                raise SupermaskError(
                    f"target_parameters: {where!r} is a {p.dim()}-D {p.dtype} tensor; only float tensors of 2 or more "
                    "dimensions (weight matrices, convolution kernels, stacked expert weights) can be masked"
                )
            if len(owners.get(id(p), [])) > 1:
                tied = next(n for m, n in owners[id(p)] if n != where)
                raise SupermaskError(f"target_parameters: {where!r} is tied to {tied}: masking it would untie them")
            specs = {n: (b, t) for n, b, t in parameter_specs(module)}
            bias, transposed = specs.get(pname, (None, False))
            found.append(_parameter_target(where, module, pname, bias, transposed))
    if not isinstance(spec, str):
        unused = [item for item in spec if item not in used]
        if unused:
            raise SupermaskError(
                f"target_parameters: no parameter is named {unused[0]!r} (exact name or dotted suffix)"
            )
    elif not used:
        raise SupermaskError(f"target_parameters={spec!r} matches no parameter (a regex, full match)")
    return found


def plan_conversion(model: nn.Module, cfg: SupermaskConfig) -> ConversionPlan:
    """Step 1 of a conversion: check ``model`` and ``cfg`` and choose what to convert, changing nothing.
    Raises on anything :func:`~supermask.core.convert.apply_conversion` could not do."""
    cfg.validate()
    on_meta = [name for name, p in itertools.chain(model.named_parameters(), model.named_buffers()) if p.is_meta]
    if on_meta:
        raise SupermaskError(
            f"{len(on_meta)} parameter(s)/buffer(s) are on the meta device and hold no values (first: {on_meta[0]!r}): "
            "materialise the model first (load its weights, or model.to_empty(device=...) and initialise it), "
            "then convert"
        )
    if any(isinstance(m, SupermaskLayer) for m in model.modules()):
        raise SupermaskError("the model is already converted; call to_supermask on an unconverted model")
    names = all_names(model)
    owners = _parameter_owners(model)
    report = ConversionReport()
    targets: list[tuple[str, Any]] = []
    parameters: list[ParameterTarget] = []
    in_place: set[int] = set()
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
        base = convertible_type(module)
        specs = parameter_specs(module) if base is None else []
        explicit = cfg.target_modules is not None and any(_matches(a, module, cfg.target_modules) for a in aliases)
        wanted = explicit or (cfg.target_modules is None and (base is not None or bool(specs)))
        reason = _unsupported_reason(module)
        if reason is None and (base is not None or specs) and wanted:
            tied = _tied_elsewhere(owners, module, [n for n, _ in _weight_names(module)])
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
        elif specs:
            candidates.append(name)
            if wanted and id(module) not in in_place:
                in_place.add(id(module))
                for pname, bias, transposed in specs:
                    if module._parameters.get(pname) is not None:
                        parameters.append(_parameter_target(f"{name}.{pname}", module, pname, bias, transposed))
    parameters += _named_parameters(
        model,
        cfg,
        names,
        excluded,
        {(id(t.owner), t.parameter) for t in parameters},
        {id(m) for _, m in targets},
        owners,
    )
    if cfg.first_layer_dense and targets:
        report.left_dense.append(targets.pop(0)[0])
    if cfg.last_layer_dense and targets:
        report.left_dense.append(targets.pop()[0])
    if not targets and not parameters:
        raise SupermaskError(_nothing_to_convert(model, cfg, candidates, report))
    method = create_method(cfg)
    method.check([int(m.weight.numel()) for _, m in targets] + [int(t.weight.numel()) for t in parameters], cfg.k)
    if cfg.weight_init == "pretrained":
        _check_pretrained(model, cfg, targets, method, parameters)
    batchnorms: list[tuple[str, Any]] = []
    if cfg.batchnorm == "non_affine" and method.has_scores:
        batchnorms = [
            (n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine
        ]
    report.converted = [n for n, _ in targets] + [t.name for t in parameters]
    report.in_place = [t.name for t in parameters]
    report.converted_weights = sum(int(m.weight.numel()) for _, m in targets) + sum(
        int(t.weight.numel()) for t in parameters
    )
    report.aliases = {n: names[id(m)][1:] for n, m in targets if len(names[id(m)]) > 1}
    report.batchnorm_non_affine = [n for n, _ in batchnorms]
    plan = ConversionPlan(cfg, targets, report, batchnorms, names, method, parameters=parameters)
    plan.unconverted = _unconverted(model, plan, cfg)
    return plan


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
    if convertible_type(model) is not None:
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


def _check_pretrained(
    model: nn.Module,
    cfg: SupermaskConfig,
    targets: list[tuple[str, Any]],
    method: Any,
    parameters: list[ParameterTarget],
) -> None:
    """Masks over trained weights must not destroy them: no zeroed biases, no dropped BatchNorm affines."""
    biased = any(isinstance(getattr(m, "bias", None), torch.Tensor) for _, m in targets) or any(
        t.bias is not None and isinstance(t.owner._parameters.get(t.bias), torch.Tensor) for t in parameters
    )
    if cfg.bias == "zero" and biased:
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


def _unconverted(
    model: nn.Module, plan: ConversionPlan, cfg: SupermaskConfig
) -> list[tuple[UnconvertedEntry, list[Any]]]:
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
    governed = {id(t.weight) for t in plan.parameters}  # masked in place, and their biases (``bias``)
    governed |= {
        id(t.owner._parameters[t.bias])
        for t in plan.parameters
        if t.bias and t.owner._parameters.get(t.bias) is not None
    }
    seen: set[int] = set(governed)
    for name, module in model.named_modules():
        if id(module) in converted or id(module) in dropped:
            seen.update(id(p) for p in module.parameters(recurse=False))
            continue
        params = [(n, p) for n, p in module.named_parameters(recurse=False) if id(p) not in governed]
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
        elif convertible_type(module) is not None:
            reason = "not matched by target_modules, or inside an excluded module"
        elif isinstance(module, _NORMS):
            reason = "a normalisation layer (its weights scale features; they are not a weight matrix)"
        elif list(module.children()):  # a container's own parameters: raw nn.Parameters
            for pname, p in params:
                if not any(p is q for q in fresh):
                    continue
                full = f"{name}.{pname}" if name else pname
                reason = f"a raw nn.Parameter of {kind}, not a layer supermask converts"
                out.append((UnconvertedEntry(full, "Parameter", numel(p), reason, learn), [p]))
            continue
        else:
            reason = f"{kind} is not a layer supermask converts (Linear, Conv1d/2d/3d, transformers Conv1D)"
        values = sum(numel(p) for _, p in params)
        out.append((UnconvertedEntry(name or "(model)", kind, values, reason, trainable), [p for _, p in params]))
    return out


def numel(p: Any) -> int:
    """Number of values of a parameter (0 while a lazy module's parameter is uninitialized)."""
    return 0 if isinstance(p, nn.parameter.UninitializedParameter) else int(p.numel())


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def replace_everywhere(model: nn.Module, names: list[str], new: nn.Module) -> None:
    """Register ``new`` under every name the old module had (a shared module stays shared)."""
    for name in names:
        _set_submodule(model, name, new)
