"""One backbone, many masks (SupSup, Wortsman et al. 2020): choose a task's mask, or infer the task.

With ``SupermaskConfig(tasks=N)`` every converted layer keeps N sets of scores over the same frozen
weights. :func:`set_task` chooses the set the forward pass uses and the only one that trains: the other
tasks' scores get no gradient, so no optimiser step (weight decay and momentum included) can change
their masks. :func:`infer_task` finds the task of a batch whose task is unknown.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from supermask.core.inspection import get_config
from supermask.core.layers import supermask_layers
from supermask.core.masks import _OPTIMIZER_STEPS
from supermask.errors import SupermaskConfigError, SupermaskError


def set_task(model: nn.Module, task: int) -> None:
    """Use (and train) task ``task``'s masks, 0 <= task < ``config.tasks``."""
    tasks = get_config(model).tasks
    if isinstance(task, bool) or not isinstance(task, int) or not 0 <= task < tasks:
        raise SupermaskConfigError(f"task={task!r} is not valid: this model has tasks 0 .. {tasks - 1}")
    for _, layer in supermask_layers(model):
        layer.use_task(task)


def current_task(model: nn.Module) -> int:
    """The task whose masks the forward pass uses now."""
    get_config(model)
    layers = supermask_layers(model)
    return int(layers[0][1].task) if layers else 0


def infer_task(model: nn.Module, x: Any) -> int:
    """SupSup's one-shot task inference: the task of the inputs ``x`` (a tensor, or a dict of a model's
    keyword inputs such as ``{"input_ids": ...}``).

    Every task's mask is put in superposition, ``W * sum_t alpha_t M_t`` with alpha_t = 1/N, the model's
    output entropy (softmax over the last dimension, averaged over the batch) is differentiated once with
    respect to the alphas, and the task whose alpha would lower the entropy most (the most negative
    gradient) is returned. Batch requirements: every input of ``x`` must belong to the same task (the
    entropy is pooled over the batch), and larger batches decide more reliably (the paper used 128;
    a single input works but errs more). The model runs in eval mode; its active task is restored.
    """
    tasks = get_config(model).tasks
    if tasks < 2:
        raise SupermaskConfigError("infer_task needs a model converted with tasks >= 2")
    layers = [layer for _, layer in supermask_layers(model) if layer.scores is not None]
    active, was = current_task(model), model.training
    model.eval()
    try:
        with torch.no_grad():
            stacks = [_task_masks(layer, tasks) for layer in layers]
        # The one gradient it needs is taken even when the caller runs under no_grad or inference_mode.
        with torch.inference_mode(False), torch.enable_grad():
            alphas = torch.full((tasks,), 1.0 / tasks, device=stacks[0].device, requires_grad=True)
            for layer, stack in zip(layers, stacks):
                m = stack.to(layer.base_layer.weight.dtype)
                layer._superposition = torch.tensordot(alphas.to(m.dtype), m.clone() if m.is_inference() else m, dims=1)
            out = model(**x) if isinstance(x, dict) else model(x)
            logits = getattr(out, "logits", out)
            if not isinstance(logits, Tensor) or logits.numel() == 0:
                raise SupermaskConfigError("infer_task needs a batch of at least one input: the model gave no outputs")
            log_p = F.log_softmax(logits.float().reshape(-1, logits.shape[-1]), dim=-1)
            entropy = -(log_p.exp() * log_p).sum(-1).mean()
            (grad,) = torch.autograd.grad(entropy, alphas)
    finally:
        for layer in layers:
            layer._superposition = None
        set_task(model, active)
        model.train(was)
    if not bool(torch.isfinite(grad).all()):
        raise SupermaskError("infer_task: the output entropy's gradient is not finite (NaN or inf outputs?)")
    return int(grad.argmin())


def _task_masks(layer: Any, tasks: int) -> Tensor:
    """Every task's mask of ``layer`` in eval mode, stacked (tasks x weight shape, the masks' own dtype:
    bool, or float for signed masks), cached on the layer until any task's scores, k or the method's state
    change: inferring the task of many batches selects each mask once, not once a batch. A miss leaves the
    layer's active task at the last one (the caller restores it)."""
    # every task's scores (identity, in-place version, optimiser steps taken anywhere), k and the method's
    # state; read off the bank without switching tasks (switching costs O(tasks) itself)
    steps = _OPTIMIZER_STEPS[0]
    keys = [(id(p), object() if p.is_inference() else p._version, steps, p.device) for p in layer.score_parameters()]
    keys.append((layer.k, *layer.method.cache_key(layer)))
    cached = layer.__dict__.get("_task_masks")
    if cached is not None and cached[0] == keys:
        return cached[1]
    masks = []
    for t in range(tasks):
        layer.use_task(t)
        masks.append(layer.mask())
    stack = torch.stack(masks)
    layer.__dict__["_task_masks"] = (keys, stack)  # set through __dict__: not a module attribute
    return stack
