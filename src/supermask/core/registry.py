"""The registry of mask methods by name: a leaf module (it imports no other part of supermask but
errors and values), so that the config, the layers and the loaders look methods up without
importing each other. The built-in methods register themselves when :mod:`supermask.core.methods` is
imported (``import supermask`` does)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from supermask.core.values import show
from supermask.errors import SupermaskConfigError

if TYPE_CHECKING:
    from supermask.core.config import SupermaskConfig
    from supermask.core.methods.base import MaskMethod

_REGISTRY: dict[str, type[MaskMethod]] = {}
_METHOD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def register_method(cls: type[MaskMethod]) -> type[MaskMethod]:
    """Register a method class under ``cls.name`` (usable as a decorator); a name is registered once."""
    if not cls.name or not isinstance(cls.name, str):
        raise SupermaskConfigError(f"{cls.__name__} needs a class attribute name")
    if not _METHOD_NAME.fullmatch(cls.name):
        raise SupermaskConfigError(
            f"method name {cls.name!r} of {cls.__name__} must be letters, digits, '-', '_' or '.', starting with a "
            "letter or digit (it appears in config values, sweep grids and run names)"
        )
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise SupermaskConfigError(f"a mask method named {cls.name!r} is already registered")
    if cls.has_scores and not _overrides(cls, "select"):
        raise SupermaskConfigError(
            f"{cls.__name__} ({cls.name!r}) must implement select(layer), the mask from the scores"
        )
    _REGISTRY[cls.name] = cls
    return cls


def _overrides(cls: type, name: str) -> bool:
    """Whether a class below the interface's root (``MaskMethod``, the last class before ``object``)
    defines ``name``."""
    owner = next((c for c in cls.__mro__ if name in vars(c)), None)
    return owner is not None and owner is not cls.__mro__[-2]


def method_names() -> tuple[str, ...]:
    """The registered methods' names."""
    return tuple(_REGISTRY)


def method_class(name: str) -> type[MaskMethod]:
    """The class registered as ``name``; a config error listing the choices otherwise."""
    cls = _REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None:
        raise SupermaskConfigError(f"method={show(name)} is not valid; choose one of: {', '.join(_REGISTRY)}")
    return cls


def create_method(config: SupermaskConfig) -> MaskMethod:
    """A fresh method instance for one model (it checks its own options)."""
    return method_class(config.method)(config)
