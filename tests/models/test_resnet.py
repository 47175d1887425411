"""He et al.'s ResNets (supermask.models.resnet): the CIFAR and ImageNet layouts against the paper."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from supermask.models import create
from supermask.models.resnet import BasicBlock, Bottleneck


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


def test_the_imagenet_layout_has_torchvisions_parameter_counts() -> None:
    """ResNet-18 and ResNet-50 hold 11,689,512 and 25,557,032 parameters (torchvision's, with biases of the fc);
    the wide ResNet-50-2 68,883,240: the layout is the standard one, so pretrained weights map onto it."""
    for name, count in (("resnet18", 11_689_512), ("resnet50", 25_557_032), ("wide_resnet50_2", 68_883_240)):
        model = create(name, num_classes=1000, in_channels=3, image_size=224)
        assert sum(p.numel() for p in model.parameters()) == count, name


def test_blocks_keep_or_halve_the_resolution_and_project_the_shortcut_only_when_needed() -> None:
    x = torch.randn(2, 16, 8, 8)
    same = BasicBlock(16, 16, 1, 16)
    assert same(x).shape == (2, 16, 8, 8) and isinstance(same.downsample, nn.Identity)
    down = BasicBlock(16, 32, 2, 32)
    assert down(x).shape == (2, 32, 4, 4) and isinstance(down.downsample[0], nn.Conv2d)
    wide = Bottleneck(64, 16, 1, 32)  # a wide ResNet's bottleneck: 32 channels inside, 16 * 4 out
    assert wide(torch.randn(2, 64, 8, 8)).shape == (2, 64, 8, 8) and wide.conv2.out_channels == 32
    assert isinstance(wide.downsample, nn.Identity)
