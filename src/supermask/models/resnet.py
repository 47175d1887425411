"""ResNets: CIFAR variants (3x3 stem, no max-pool) and ImageNet variants, incl. Wide ResNets; He et al.'s
CIFAR ResNet-20/32/44/56 (three stages of 16, 32, 64 channels, 1x1-convolution shortcuts where the shape
changes)."""

from __future__ import annotations

from torch import Tensor, nn

from supermask.models.mlp import scaled

_DEPTHS = {
    "resnet18": ("basic", [2, 2, 2, 2]),
    "resnet34": ("basic", [3, 4, 6, 3]),
    "resnet50": ("bottleneck", [3, 4, 6, 3]),
    "resnet101": ("bottleneck", [3, 4, 23, 3]),
    "resnet20": ("basic", [3, 3, 3]),
    "resnet32": ("basic", [5, 5, 5]),
    "resnet44": ("basic", [7, 7, 7]),
    "resnet56": ("basic", [9, 9, 9]),
}
#: the first stage's channels: 16 for He et al.'s three-stage CIFAR ResNets, else 64
_BASE_PLANES = {"resnet20": 16, "resnet32": 16, "resnet44": 16, "resnet56": 16}


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
    """A ResNet; ``stem='cifar'`` (3x3 conv) or ``'imagenet'`` (7x7 stride-2 conv + max-pool); one stage
    (``layer1``, ``layer2``, ...) per entry of ``layers``, the first of ``base_planes`` channels (times width)."""

    def __init__(
        self,
        block: str,
        layers: list[int],
        num_classes: int = 10,
        width: float = 1.0,
        in_channels: int = 3,
        stem: str = "cifar",
        base_width_factor: int = 1,
        base_planes: int = 64,
    ) -> None:
        super().__init__()
        block_cls: type[BasicBlock] | type[Bottleneck] = BasicBlock if block == "basic" else Bottleneck
        planes0 = scaled(base_planes, width)
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
            planes = scaled(base_planes * 2**i, width)
            mid = planes * base_width_factor
            blocks = []
            for j in range(count):
                blocks.append(block_cls(in_planes, planes, 2 if (j == 0 and i > 0) else 1, mid))
                in_planes = planes * block_cls.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = len(stages)
        for i, stage in enumerate(stages):
            self.add_module(f"layer{i + 1}", stage)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for i in range(self.stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(self.pool(x).flatten(1))


def cifar_resnet(
    depth: str, num_classes: int = 10, width: float = 1.0, in_channels: int = 3, image_size: int = 32
) -> ResNet:
    block, layers = _DEPTHS[depth]
    return ResNet(block, layers, num_classes, width, in_channels, stem="cifar", base_planes=_BASE_PLANES.get(depth, 64))


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
