"""The paper's Conv2/4/6/8 (supermask.models.conv): layouts and sizes against the published counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from supermask.errors import SupermaskConfigError
from supermask.models.conv import ConvNet


@pytest.mark.parametrize(("depth", "count"), [(2, 4_300_992), (4, 2_425_024), (6, 2_261_184), (8, 5_275_840)])
def test_the_weight_counts_are_the_papers(depth: int, count: int) -> None:
    """Koster et al.'s README (and Ramanujan et al.'s Conv2-8): 4,300,992 / 2,425,024 / 2,261,184 / 5,275,840
    weights for Conv2/4/6/8 on CIFAR-10, no biases."""
    model = ConvNet(depth=depth)
    assert sum(p.numel() for p in model.parameters()) == count
    assert all(m.bias is None for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_width_and_activation() -> None:
    half = ConvNet(depth=4, width=0.5, activation="elu")
    convs = [m.out_channels for m in half.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [32, 32, 64, 64] and any(isinstance(m, nn.ELU) for m in half.modules())
    assert half.classifier[-1].in_features == 128


def test_an_impossible_depth_or_image_size_is_a_config_error() -> None:
    with pytest.raises(SupermaskConfigError, match="depth=5 must be 2, 4, 6 or 8"):
        ConvNet(depth=5)
    with pytest.raises(SupermaskConfigError, match="image_size=36 must be divisible by 16 for conv8"):
        ConvNet(depth=8, image_size=36)
