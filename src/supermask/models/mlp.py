"""Fully connected networks (LeNet-300-100 and friends)."""

from __future__ import annotations

from torch import Tensor, nn


def scaled(channels: int, width: float) -> int:
    """A hidden width scaled by ``width``, at least 1."""
    return max(1, int(round(channels * width)))


class MLP(nn.Module):
    """Flatten, then Linear-ReLU per hidden layer, then a Linear classifier (no biases, as the paper)."""

    def __init__(
        self,
        hidden: tuple[int, ...] = (300, 100),
        num_classes: int = 10,
        width: float = 1.0,
        in_channels: int = 1,
        image_size: int = 28,
        bias: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        size = in_channels * image_size * image_size
        for h in hidden:
            layers += [nn.Linear(size, scaled(h, width), bias=bias), nn.ReLU()]
            size = scaled(h, width)
        layers.append(nn.Linear(size, num_classes, bias=bias))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
