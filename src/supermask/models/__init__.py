"""Plain ``nn.Module`` models of the paper's experiments; none knows about supermasks.

``create(name, num_classes=10, width=1.0, in_channels=3, image_size=32)`` builds one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from supermask.errors import SupermaskConfigError
from supermask.models.conv import ConvNet
from supermask.models.mlp import MLP
from supermask.models.resnet import cifar_resnet, imagenet_resnet

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "mlp": lambda **kw: MLP(hidden=(256, 256), **kw),
    "fc": lambda **kw: MLP(hidden=(300, 100), **kw),
    "lenet300100": lambda **kw: MLP(hidden=(300, 100), **kw),
    "conv2": lambda **kw: ConvNet(depth=2, **kw),
    "conv4": lambda **kw: ConvNet(depth=4, **kw),
    "conv6": lambda **kw: ConvNet(depth=6, **kw),
    "conv8": lambda **kw: ConvNet(depth=8, **kw),
    "cifar_resnet18": lambda **kw: cifar_resnet("resnet18", **kw),
    "cifar_resnet34": lambda **kw: cifar_resnet("resnet34", **kw),
    "cifar_resnet50": lambda **kw: cifar_resnet("resnet50", **kw),
    "resnet18": lambda **kw: imagenet_resnet("resnet18", **kw),
    "resnet34": lambda **kw: imagenet_resnet("resnet34", **kw),
    "resnet50": lambda **kw: imagenet_resnet("resnet50", **kw),
    "resnet101": lambda **kw: imagenet_resnet("resnet101", **kw),
    "wide_resnet50_2": lambda **kw: imagenet_resnet("resnet50", base_width_factor=2, **kw),
    "wide_resnet101_2": lambda **kw: imagenet_resnet("resnet101", base_width_factor=2, **kw),
}

MODEL_NAMES = tuple(sorted(_REGISTRY))


def create(
    name: str, num_classes: int = 10, width: float = 1.0, in_channels: int = 3, image_size: int = 32, **kwargs: Any
) -> nn.Module:
    """Build model ``name`` (see :data:`MODEL_NAMES`). ``width`` multiplies every hidden width.

    MLPs take ``image_size`` and ``in_channels`` to size their input (in_channels * image_size**2).
    """
    if name not in _REGISTRY:
        raise SupermaskConfigError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
    if not (isinstance(num_classes, int) and num_classes >= 1):
        raise SupermaskConfigError(f"num_classes={num_classes!r} must be a positive integer")
    if not (width > 0):
        raise SupermaskConfigError(f"width={width!r} must be positive")
    return _REGISTRY[name](
        num_classes=num_classes, width=width, in_channels=in_channels, image_size=image_size, **kwargs
    )


__all__ = ["MODEL_NAMES", "ConvNet", "MLP", "create"]
