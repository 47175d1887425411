"""The built-in models (supermask.models): shapes and sizes against their papers."""

from __future__ import annotations

import pytest
import torch

from supermask.models import MODEL_NAMES, create


@pytest.mark.parametrize(
    ("name", "millions"), [("cifar_resnet20", 0.27), ("cifar_resnet32", 0.46), ("cifar_resnet56", 0.85)]
)
def test_he_et_al_cifar_resnets_have_the_papers_sizes(name: str, millions: float) -> None:
    """He et al. 2016, Table 6: ResNet-20/32/56 have 0.27M/0.46M/0.85M parameters (three stages, 16-64 channels)."""
    model = create(name)
    # within 2%: the 1x1-convolution shortcuts (option B) add a few thousand to option A's zero padding
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - millions) <= 0.02 * millions
    assert [n for n, _ in model.named_children()] == ["stem", "layer1", "layer2", "layer3", "pool", "fc"]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_every_model_builds_and_gives_logits() -> None:
    for name in MODEL_NAMES:
        if name.startswith(("resnet", "wide_")):  # ImageNet-sized: built elsewhere (test_pinned)
            continue
        size = 28 if name in ("fc", "lenet300100", "mlp") else 32
        channels = 1 if size == 28 else 3
        model = create(name, num_classes=7, in_channels=channels, image_size=size).eval()
        with torch.no_grad():
            assert model(torch.randn(2, channels, size, size)).shape == (2, 7), name
