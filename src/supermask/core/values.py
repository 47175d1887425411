"""Small checks of configuration values shared by every config (no dependencies)."""

from __future__ import annotations

import math
from typing import Any


def shorten(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters for a message (with how long it was)."""
    return text if len(text) <= limit else f"{text[: limit - 20]}...({len(text)} characters)"


def show(value: Any) -> str:
    """``repr(value)`` bounded for a message (a value of megabytes, or an alias bomb, is never printed whole)."""
    if isinstance(value, (dict, list, tuple, set)) and len(value) > 20:
        return f"<{type(value).__name__} of {len(value)} items>"
    try:
        text = repr(value)
    except RecursionError:
        return f"<a deeply nested {type(value).__name__}>"
    return shorten(text)


def is_finite_number(value: Any) -> bool:
    """A real number (not a bool) that converts to a finite float (an integer of 400 digits does not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False
