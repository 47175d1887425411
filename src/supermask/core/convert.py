"""Step 2 of turning a model into a supermask search (in place): make the frozen weights and initial
scores, then wrap the layers :func:`~supermask.core.targets.plan_conversion` chose. What a converted
model is asked afterwards (its layers, config, sparsity, set_k, merge) is in
:mod:`supermask.core.inspection`."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from supermask.core.config import SupermaskConfig
from supermask.core.init import generate_weight
from supermask.core.layers import (
    MASKED_PREFIX,
    FrozenWeight,
    SupermaskConv1D,
    SupermaskParameter,
    mask_parameters_in_place,
    supermask_layers,
)
from supermask.core.masks import outside_inference_mode
from supermask.core.methods import MaskMethod, scale_fan_problem
from supermask.core.targets import (
    SUPPORTED,
    ConversionPlan,
    ConversionReport,
    UnconvertedEntry,
    convertible_type,
    numel,
    plan_conversion,
    replace_everywhere,
    wrapper_class,
)
from supermask.errors import SupermaskConfigError, SupermaskError

__all__ = [
    "SUPPORTED",
    "ConversionPlan",
    "ConversionReport",
    "UnconvertedEntry",
    "apply_conversion",
    "plan_conversion",
    "refuse_save_pretrained",
    "to_supermask",
]


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
def to_supermask(model: nn.Module, config: SupermaskConfig | None = None) -> nn.Module:
    """Convert ``model`` in place into a supermask search and return it.

    Each targeted layer is wrapped (:class:`~supermask.core.layers.SupermaskLinear`,
    :class:`~supermask.core.layers.SupermaskConv` or, for transformers' ``Conv1D``,
    :class:`~supermask.core.layers.SupermaskConv1D`): its weight is replaced by a deterministic frozen
    random weight, and trainable ``scores`` choose the kept subnetwork. A module registered under
    several names gets one wrapper, reached from each name. Every other parameter is listed in
    ``model.supermask_report`` and frozen or left trainable as ``config.unconverted`` says.
    ``model.supermask_config`` records the config. Raises before changing anything.

    Two steps, each public: :func:`~supermask.core.targets.plan_conversion` (check and choose) and
    :func:`apply_conversion` (make the tensors, then change the model).
    """
    cfg = dataclasses.replace(config) if config is not None else SupermaskConfig()  # set_k must not edit the caller's
    plan = plan_conversion(model, cfg)
    problem = scale_fan_problem(plan.method)
    if problem:  # a new conversion (a saved one, scores from its masks or state, still loads)
        raise SupermaskConfigError(problem)
    return apply_conversion(model, plan)


@outside_inference_mode
def apply_conversion(
    model: nn.Module,
    plan: ConversionPlan,
    *,
    weights: dict[str, torch.Tensor] | None = None,
    initial_scores: bool = True,
) -> nn.Module:
    """Step 2 of a conversion: wrap the layers ``plan`` chose (``plan_conversion(model, ...)``, of this
    very model) and return the model. Every tensor is made before the model changes.

    ``weights``: each layer's frozen weight, by layer name (the checkpoint loader's, regenerated and
    checked); None: drawn from the config's seed (or the layer's own, ``weight_init='pretrained'``).
    ``initial_scores=False``: the scores are placeholders that whoever calls sets next (a checkpoint's
    masks, a run's saved state): nothing is drawn.
    """
    cfg = plan.config
    method = plan.method

    # Generate everything first: nothing is changed until all of it exists.
    def tensors(name: str, source: torch.Tensor, fan_shape: tuple[int, ...]) -> tuple[Any, Any, Any]:
        shape = tuple(source.shape)
        if weights is not None:
            weight = weights[name]
        elif cfg.weight_init == "pretrained":
            weight = source.detach().clone()  # masks over the model's own weights
        else:
            weight = generate_weight(name, shape, cfg, cfg.k, fan_shape)
        if initial_scores:
            scores = _checked_scores(method, name, shape, method.initial_scores(name, shape, fan_shape))
        else:  # a checkpoint's masks set every one of them next (load): placeholders, nothing drawn or zeroed
            scores = torch.empty(shape) if method.has_scores else None
        banks: list[torch.Tensor] | None = None
        if cfg.tasks > 1 and scores is not None:  # task t > 0 draws its own scores (task 0's are the plain ones)
            others = [
                _checked_scores(method, name, shape, method.initial_scores(f"{name}@task{t}", shape, fan_shape))
                if initial_scores
                else torch.empty(shape)
                for t in range(1, cfg.tasks)
            ]
            banks = [scores, *[s for s in others if s is not None]]
        return weight, scores, banks

    new_tensors = []
    for name, module in plan.targets:
        wrapper_cls = wrapper_class(convertible_type(module))  # type: ignore[arg-type]
        shape = tuple(module.weight.shape)
        new_tensors.append(
            (wrapper_cls, *tensors(name, module.weight, shape[::-1] if wrapper_cls is SupermaskConv1D else shape))
        )
    in_place = [tensors(t.name, t.weight, t.fan) for t in plan.parameters]
    unconverted = plan.unconverted

    def placed(tensor: torch.Tensor | None, ref: torch.Tensor) -> Any:
        return None if tensor is None else tensor.to(device=ref.device, dtype=ref.dtype)

    def apply_bias(bias: Any) -> None:
        if isinstance(bias, torch.Tensor):
            if cfg.bias == "zero":
                with torch.no_grad():
                    bias.zero_()
            bias.requires_grad_(cfg.bias == "learned")

    trains_weight = not method.has_scores
    for (name, module), (wrapper_cls, weight, scores, banks) in zip(plan.targets, new_tensors):
        ref = module.weight
        module.weight = nn.Parameter(placed(weight, ref), requires_grad=trains_weight)
        apply_bias(module.bias)
        banks = [placed(b, ref) for b in banks] if banks is not None else None
        wrapper = wrapper_cls(module, name, method, cfg.k, placed(scores, ref), banks)
        wrapper.train(module.training)
        replace_everywhere(model, plan.names[id(module)], wrapper)
    by_owner: dict[int, list[str]] = {}
    for target, (weight, scores, banks) in zip(plan.parameters, in_place):
        ref = target.weight
        holder = FrozenWeight(nn.Parameter(placed(weight, ref), requires_grad=trains_weight))
        banks = [placed(b, ref) for b in banks] if banks is not None else None
        layer = SupermaskParameter(
            holder,
            target.name,
            method,
            cfg.k,
            placed(scores, ref),
            banks,
            owner_type=type(target.owner).__name__,
            fan=target.fan,
        )
        layer.train(target.owner.training)
        if target.bias is not None:
            apply_bias(target.owner._parameters.get(target.bias))
        target.owner._parameters.pop(target.parameter)
        target.owner.add_module(MASKED_PREFIX + target.parameter, layer)
        by_owner.setdefault(id(target.owner), []).append(target.parameter)
    for target in plan.parameters:
        if id(target.owner) in by_owner:
            mask_parameters_in_place(target.owner, by_owner.pop(id(target.owner)))
    wrappers = [layer for _, layer in supermask_layers(model)]
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
    report.trainable_parameters = sum(numel(p) for p in model.parameters() if p.requires_grad)
    report.total_parameters = sum(numel(p) for p in model.parameters())
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
        "With the Hugging Face Trainer, add supermask.integrations.hf.SupermaskTrainerCallback() to its callbacks"
    )
