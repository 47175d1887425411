"""Fully connected networks (supermask.models.mlp): LeNet-300-100's layout and the options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from supermask.errors import SupermaskConfigError
from supermask.models.mlp import MLP, activation_layer, scaled


def test_lenet_300_100_has_the_papers_266200_weights_and_no_biases() -> None:
    model = MLP(hidden=(300, 100))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 300), (300, 100), (100, 10)]
    assert sum(p.numel() for p in model.parameters()) == 266_200 and all(m.bias is None for m in linears)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_width_scales_the_hidden_layers_only_and_never_to_zero() -> None:
    model = MLP(hidden=(300, 100), width=0.5, in_channels=3, image_size=8, num_classes=4, bias=True)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(192, 150), (150, 50), (50, 4)]
    assert all(m.bias is not None for m in linears)
    assert scaled(3, 0.01) == 1 and scaled(300, 1.5) == 450


def test_activations() -> None:
    assert isinstance(activation_layer("elu"), nn.ELU) and isinstance(activation_layer("relu"), nn.ReLU)
    with pytest.raises(SupermaskConfigError, match="activation='tanh' is not valid; choose one of: relu, elu"):
        activation_layer("tanh")
