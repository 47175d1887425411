"""Helpers of the task-mask tests: the small MLP of the digits tasks."""

from __future__ import annotations

from torch import nn


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
