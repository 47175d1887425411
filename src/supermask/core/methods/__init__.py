"""Mask methods, one module each, registered by name (see :mod:`supermask.core.methods.base`).

Importing this package registers the built-in methods, in the order the README lists them.
"""
# isort: skip_file

from supermask.core.methods.base import (
    MaskMethod,
    NoOptions,
    create_method,
    method_class,
    method_names,
    register_method,
    scale_fan_problem,
)
from supermask.core.methods import edge_popup  # noqa: F401  (registers edge-popup, edge-popup-global)
from supermask.core.methods import bernoulli  # noqa: F401
from supermask.core.methods import dense  # noqa: F401
from supermask.core.methods import biprop  # noqa: F401
from supermask.core.methods import signed_supermask  # noqa: F401
from supermask.core.methods import threshold  # noqa: F401
from supermask.core.methods import gem_miner  # noqa: F401
from supermask.core.methods import iterand  # noqa: F401

__all__ = [
    "MaskMethod",
    "NoOptions",
    "create_method",
    "method_class",
    "method_names",
    "register_method",
    "scale_fan_problem",
]
