"""What a converted model is asked, and what changes it after conversion: its layers and config,
``set_k``, ``set_eval_draw``, sparsity and silent-output reports, and ``merge`` back into a plain model."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from supermask.core.config import SupermaskConfig, check_k
from supermask.core.convert import refuse_save_pretrained
from supermask.core.init import generate_weight
from supermask.core.layers import (
    MASKED_PREFIX,
    SupermaskParameter,
    supermask_layers,
    unmask_parameters,
)
from supermask.core.masks import outside_inference_mode
from supermask.core.methods import method_class, method_names
from supermask.core.targets import all_names, replace_everywhere
from supermask.errors import SupermaskConfigError, SupermaskError


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


def set_eval_draw(model: nn.Module, draw: int) -> None:
    """Make the eval mask random draw number ``draw`` (>= 0), where the method's eval mask is one random
    draw among many (``bernoulli`` with ``bernoulli_eval="sample"``). Draw 0 is the one a run evaluates and
    a checkpoint stores; averaging the accuracy over draws 0 .. N-1 is Zhou et al.'s protocol (N = 10),
    ``supermask eval RUN --draws N``. ``save`` stores draw 0 whatever the draw in use (the mask the
    checkpoint's config selects on load). Training masks are unaffected.
    A clear error where every draw would be the same mask (a deterministic method, or a checkpoint loaded
    without its scores)."""
    if isinstance(draw, bool) or not isinstance(draw, int) or draw < 0:
        raise SupermaskConfigError(f"draw={draw!r} is not valid: a draw is an integer >= 0 (0: the run's own)")
    get_config(model)
    layers = [layer for _, layer in supermask_layers(model)]
    if not layers:
        raise SupermaskConfigError("this model has no converted layers: there is no mask to draw")
    method = layers[0].method
    method.check_eval_draws(layers)
    method.eval_draw = draw


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
    names = all_names(model)
    owners = {id(child): parent for parent in model.modules() for child in parent.children()}
    in_place: list[tuple[nn.Module, str, torch.Tensor]] = []
    for (_, layer), (_, base, weight) in zip(layers, merged):
        if isinstance(layer, SupermaskParameter):  # masked in place: the parameter goes back into its module
            in_place.append((owners[id(layer)], layer.parameter, weight))
            continue
        base.weight = nn.Parameter(weight)  # base: nn.Linear / nn.ConvNd / Conv1D
        if isinstance(base.bias, torch.Tensor):
            base.bias.requires_grad_(True)
        replace_everywhere(model, names[id(layer)], base)
    for owner, _, _ in in_place:
        unmask_parameters(owner)  # its class again: the parameters are plain attributes once more
    for owner, parameter, weight in in_place:
        del owner._modules[MASKED_PREFIX + parameter]
        owner.register_parameter(parameter, nn.Parameter(weight))
    del model.supermask_config
    del model.supermask_report
    if model.__dict__.get("save_pretrained") is refuse_save_pretrained:
        del model.__dict__["save_pretrained"]  # the class's own save_pretrained again
    return model
