"""Helpers of the trainer-integration tests: a small seeded MLP, a converted model's scores."""

from __future__ import annotations

import torch
from torch import nn

import supermask


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 3))


def scores(model: nn.Module) -> list[torch.Tensor]:
    return [layer.scores.detach().clone() for _, layer in supermask.supermask_layers(model)]
