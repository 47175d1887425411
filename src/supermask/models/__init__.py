"""Plain ``nn.Module`` models of the paper's experiments; none knows about supermasks.

``create(name, num_classes=10, width=1.0, in_channels=3, image_size=32, **kwargs)`` builds one; ``kwargs``
(``model.kwargs`` of a run) go to the model's constructor or factory, e.g. ``activation="elu"``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import torch
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
    "cifar_resnet20": lambda **kw: cifar_resnet("resnet20", **kw),
    "cifar_resnet32": lambda **kw: cifar_resnet("resnet32", **kw),
    "cifar_resnet44": lambda **kw: cifar_resnet("resnet44", **kw),
    "cifar_resnet56": lambda **kw: cifar_resnet("resnet56", **kw),
    "resnet18": lambda **kw: imagenet_resnet("resnet18", **kw),
    "resnet34": lambda **kw: imagenet_resnet("resnet34", **kw),
    "resnet50": lambda **kw: imagenet_resnet("resnet50", **kw),
    "resnet101": lambda **kw: imagenet_resnet("resnet101", **kw),
    "wide_resnet50_2": lambda **kw: imagenet_resnet("resnet50", base_width_factor=2, **kw),
    "wide_resnet101_2": lambda **kw: imagenet_resnet("resnet101", base_width_factor=2, **kw),
}

MODEL_NAMES = tuple(sorted(_REGISTRY))


def factory(name: str) -> Callable[..., Any]:
    """The callable of ``package.module:callable`` (a model of your own); a config error naming what failed."""
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise SupermaskConfigError(f"model.name={name!r}: a model of your own is written package.module:callable")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import error, or the module's own failure: both the user's to fix
        raise SupermaskConfigError(
            f"model.name={name!r}: cannot import {module_name!r} ({type(exc).__name__}: {exc}); is it on PYTHONPATH?"
        ) from exc
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)  # type: ignore[assignment]
        if fn is None:
            raise SupermaskConfigError(f"model.name={name!r}: {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise SupermaskConfigError(f"model.name={name!r}: {attr!r} is not callable")
    return fn  # type: ignore[return-value]


def _create_own(name: str, given: dict[str, Any], **offered: Any) -> nn.Module:
    """Call a factory with ``given`` (``model.kwargs``) and those of ``num_classes``, ``in_channels``,
    ``image_size``, ``width`` that its signature names. A factory taking only ``**kwargs`` (timm's
    ``create_model``, transformers' ``from_pretrained``) is offered none of them: it would pass them on to
    a model that does not take them; give them in ``model.kwargs`` under the names it uses.
    The model answers with its logits: an output with a ``logits`` tensor (transformers' ``ModelOutput``)
    is replaced by it (a forward hook)."""
    fn = factory(name)
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    named = {k for k, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
    kwargs = {k: v for k, v in offered.items() if k in named} | given
    try:
        model = fn(**kwargs)
    except Exception as exc:  # the factory's own failure: the user's to fix, said in one line
        raise SupermaskConfigError(
            f"model.name={name!r}: calling it with {sorted(kwargs)} failed: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(model, nn.Module):
        raise SupermaskConfigError(f"model.name={name!r} returned {type(model).__name__}, not a torch.nn.Module")
    model.register_forward_hook(logits_only)
    return model


def logits_only(module: nn.Module, args: Any, output: Any) -> Any:
    """A forward hook: an output holding a ``logits`` tensor (transformers' ``ModelOutput``) becomes that
    tensor; any other output is left as it is."""
    logits = getattr(output, "logits", None) if not isinstance(output, torch.Tensor) else None
    return logits if isinstance(logits, torch.Tensor) else None


def create(
    name: str, num_classes: int = 10, width: float = 1.0, in_channels: int = 3, image_size: int = 32, **kwargs: Any
) -> nn.Module:
    """Build model ``name`` (see :data:`MODEL_NAMES`, or ``package.module:callable`` for your own: a factory
    returning an ``nn.Module``, given ``num_classes``, ``in_channels``, ``image_size`` and ``width`` where it
    accepts them). ``width`` multiplies every hidden width.

    MLPs take ``image_size`` and ``in_channels`` to size their input (in_channels * image_size**2).
    """
    if ":" in name:
        return _create_own(
            name, kwargs, num_classes=num_classes, width=width, in_channels=in_channels, image_size=image_size
        )
    if name not in _REGISTRY:
        raise SupermaskConfigError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
    if not (isinstance(num_classes, int) and num_classes >= 1):
        raise SupermaskConfigError(f"num_classes={num_classes!r} must be a positive integer")
    if not (width > 0):
        raise SupermaskConfigError(f"width={width!r} must be positive")
    try:
        return _REGISTRY[name](
            num_classes=num_classes, width=width, in_channels=in_channels, image_size=image_size, **kwargs
        )
    except TypeError as exc:  # an argument the model does not take
        raise SupermaskConfigError(f"model.kwargs={kwargs}: model {name} cannot take them ({exc})") from exc


__all__ = ["MODEL_NAMES", "ConvNet", "MLP", "create"]
