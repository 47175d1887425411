"""Helpers of the checkpoint tests: a fresh, unconverted small network."""

from __future__ import annotations

from torch import nn


def fresh() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
