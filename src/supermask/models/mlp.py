"""Fully connected networks (LeNet-300-100 and friends)."""

from __future__ import annotations

from torch import Tensor, nn

from supermask.errors import SupermaskConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "elu": nn.ELU}


def activation_layer(name: str) -> nn.Module:
    """The hidden layers' activation: ``relu`` (the paper's) or ``elu`` (signed supermasks')."""
    if name not in ACTIVATIONS:
        raise SupermaskConfigError(f"activation={name!r} is not valid; choose one of: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def scaled(channels: int, width: float) -> int:
    """A hidden width scaled by ``width``, at least 1."""
    return max(1, int(round(channels * width)))


class MLP(nn.Module):
    """Flatten, then Linear-ReLU (or ``activation``) per hidden layer, then a Linear classifier (no biases,
    as the paper)."""

    def __init__(
        self,
        hidden: tuple[int, ...] = (300, 100),
        num_classes: int = 10,
        width: float = 1.0,
        in_channels: int = 1,
        image_size: int = 28,
        bias: bool = False,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        size = in_channels * image_size * image_size
        for h in hidden:
            layers += [nn.Linear(size, scaled(h, width), bias=bias), activation_layer(activation)]
            size = scaled(h, width)
        layers.append(nn.Linear(size, num_classes, bias=bias))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
