"""ResNets: CIFAR variants (3x3 stem, no max-pool) and ImageNet variants, incl. Wide ResNets."""

from __future__ import annotations

from torch import Tensor, nn

from supermask.models.mlp import scaled

_DEPTHS = {
    "resnet18": ("basic", [2, 2, 2, 2]),
    "resnet34": ("basic", [3, 4, 6, 3]),
    "resnet50": ("bottleneck", [3, 4, 6, 3]),
    "resnet101": ("bottleneck", [3, 4, 23, 3]),
}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int, mid: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int, mid: int) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_planes != out_planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.downsample(x))


class ResNet(nn.Module):
    """A ResNet; ``stem='cifar'`` (3x3 conv) or ``'imagenet'`` (7x7 stride-2 conv + max-pool)."""

    def __init__(
        self,
        block: str,
        layers: list[int],
        num_classes: int = 10,
        width: float = 1.0,
        in_channels: int = 3,
        stem: str = "cifar",
        base_width_factor: int = 1,
    ) -> None:
        super().__init__()
        block_cls: type[BasicBlock] | type[Bottleneck] = BasicBlock if block == "basic" else Bottleneck
        planes0 = scaled(64, width)
        if stem == "cifar":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, planes0, 3, 1, 1, bias=False), nn.BatchNorm2d(planes0), nn.ReLU(inplace=True)
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, planes0, 7, 2, 3, bias=False),
                nn.BatchNorm2d(planes0),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        stages = []
        in_planes = planes0
        for i, count in enumerate(layers):
            planes = scaled(64 * 2**i, width)
            mid = planes * base_width_factor
            blocks = []
            for j in range(count):
                blocks.append(block_cls(in_planes, planes, 2 if (j == 0 and i > 0) else 1, mid))
                in_planes = planes * block_cls.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.pool(x).flatten(1))


def cifar_resnet(
    depth: str, num_classes: int = 10, width: float = 1.0, in_channels: int = 3, image_size: int = 32
) -> ResNet:
    block, layers = _DEPTHS[depth]
    return ResNet(block, layers, num_classes, width, in_channels, stem="cifar")


def imagenet_resnet(
    depth: str,
    num_classes: int = 1000,
    width: float = 1.0,
    in_channels: int = 3,
    image_size: int = 224,
    base_width_factor: int = 1,
) -> ResNet:
    block, layers = _DEPTHS[depth]
    return ResNet(block, layers, num_classes, width, in_channels, stem="imagenet", base_width_factor=base_width_factor)
