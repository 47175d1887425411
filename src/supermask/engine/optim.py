"""The optimiser over what trains (scores, or weights for ``dense``) and the learning-rate schedule."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from supermask.runconfig import RunConfig


def build_optimizer(cfg: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD, SGDW, Adam or RMSprop over the trainable parameters (scores, or weights for ``dense``)."""
    decay, no_decay = [], []
    for _name, p in model.named_parameters():
        if not p.requires_grad:
            continue  # frozen random weights and frozen biases
        if cfg.optim.no_decay_bn_bias and (p.ndim <= 1):
            no_decay.append(p)
        else:
            decay.append(p)
    o = cfg.optim
    key = "decoupled_weight_decay" if o.name == "sgdw" else "weight_decay"
    groups = [{"params": decay, key: o.weight_decay}, {"params": no_decay, key: 0.0}]
    if o.name == "adam":
        return torch.optim.Adam(groups, lr=o.lr, betas=o.betas)
    if o.name == "rmsprop":  # PyTorch's (smoothing 0.99, eps 1e-8), with optim.momentum (0: the plain rule)
        return torch.optim.RMSprop(groups, lr=o.lr, momentum=o.momentum)
    if o.name == "sgdw":
        return SGDW(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)


class SGDW(torch.optim.SGD):
    """SGD with decoupled weight decay (Loshchilov & Hutter, "Decoupled Weight Decay Regularization";
    TensorFlow Addons' ``SGDW``): before each step every parameter shrinks by ``decoupled_weight_decay``
    times the schedule's multiplier (lr now / lr at the start), outside the gradient and the momentum."""

    def __init__(self, params: Any, lr: float, momentum: float = 0.0, nesterov: bool = False) -> None:
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=0.0)
        for group in self.param_groups:
            group.setdefault("decoupled_weight_decay", 0.0)
            group.setdefault("base_lr", lr)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        for group in self.param_groups:
            rate = group["decoupled_weight_decay"] * group["lr"] / group["base_lr"]
            if rate:
                for p in group["params"]:
                    if p.grad is not None:
                        p.mul_(1.0 - rate)
        return super().step(closure)


def learning_rate(cfg: RunConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Linear warm-up for ``warmup_epochs``, then cosine decay to 0, constant, or exponential (in steps
    every ``decay_epochs``, or continuously when ``staircase`` is false)."""
    warmup = int(cfg.optim.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return cfg.optim.lr * (step + 1) / warmup
    if cfg.optim.schedule == "constant":
        return cfg.optim.lr
    if cfg.optim.schedule == "exponential":  # TensorFlow's ExponentialDecay, staircase or continuous
        decays = (step - warmup) / (cfg.optim.decay_epochs * steps_per_epoch)
        return cfg.optim.lr * cfg.optim.decay_rate ** (math.floor(decays) if cfg.optim.staircase else decays)
    progress = (step - warmup) / max(1, total_steps - warmup)
    return cfg.optim.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
