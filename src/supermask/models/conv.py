"""The paper's Conv2/4/6/8 networks (Frankle & Carbin's VGG-like CIFAR models)."""

from __future__ import annotations

from torch import Tensor, nn

from supermask.errors import SupermaskConfigError
from supermask.models.mlp import activation_layer, scaled


class ConvNet(nn.Module):
    """``depth`` 3x3 convs in pairs 64-64-pool, 128-128-pool, 256-256-pool, 512-512-pool, then
    FC 256-256-classes. Convs and FCs have no bias, as in the paper's code."""

    def __init__(
        self,
        depth: int = 4,
        num_classes: int = 10,
        width: float = 1.0,
        in_channels: int = 3,
        image_size: int = 32,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if depth not in (2, 4, 6, 8):
            raise SupermaskConfigError(f"depth={depth} must be 2, 4, 6 or 8")
        if image_size % (2 ** (depth // 2)) != 0:
            raise SupermaskConfigError(
                f"image_size={image_size} must be divisible by {2 ** (depth // 2)} for conv{depth}"
            )
        layers: list[nn.Module] = []
        channels = in_channels
        for stage in range(depth // 2):
            out = scaled(64 * 2**stage, width)
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), activation_layer(activation)]
            layers += [nn.Conv2d(out, out, 3, padding=1, bias=False), activation_layer(activation), nn.MaxPool2d(2)]
            channels = out
        self.features = nn.Sequential(*layers)
        side = image_size // 2 ** (depth // 2)
        hidden = scaled(256, width)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * side * side, hidden, bias=False),
            activation_layer(activation),
            nn.Linear(hidden, hidden, bias=False),
            activation_layer(activation),
            nn.Linear(hidden, num_classes, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
