"""The one type checker of every config dataclass (:class:`~supermask.core.config.SupermaskConfig`, a
method's ``Options``, the run config's sections): a field's value against its annotation. The
modules use postponed annotations, so an annotation arrives as its string (``"float"``,
``"int | None"``, ``"tuple[float, float]"``)."""

from __future__ import annotations

from typing import Any

from supermask.core.values import is_finite_number, shorten, show
from supermask.errors import SupermaskConfigError

#: what a value of each annotation must be, as the error says it
EXPECTED = {
    "bool": "true or false",
    "int": "an integer",
    "float": "a finite number",
    "str": "a string",
    "list[int]": "a non-empty list of integers, e.g. [5, 6]",
    "list[str]": "a list of names, e.g. [csv, tensorboard]",
    "tuple[float, float]": "a list of two numbers, e.g. [0.9, 0.999]",
    "dict": "a mapping with names as keys",
}


class FieldTypeError(SupermaskConfigError):
    """A value that is not of its field's type; ``expected`` says what it must be (see :data:`EXPECTED`)."""

    def __init__(self, message: str, expected: str) -> None:
        super().__init__(message)
        self.expected = expected


def check_value(key: str, value: Any, annotation: str, raw: str | None = None) -> Any:
    """``value`` checked against the annotation of field ``key``; returns it normalised (an int given
    for a float as a float, a list for a tuple as a tuple, a number for a string as its text) or raises
    :class:`FieldTypeError` "KEY=VALUE must be ...". ``raw``: the text typed on a command line, shown
    in the error and kept as typed for a string (``run_name=0.10`` stays ``"0.10"``). An annotation this
    checker does not know (``Any``) passes the value on: its owner checks it."""
    optional = annotation.endswith("| None") or annotation == "Any"
    base = annotation.replace(" | None", "").strip()
    if value is None:
        if optional:
            return None
        raise FieldTypeError(f"{key} cannot be null", "not null")
    kind = "dict" if base.startswith("dict") else base
    if kind not in EXPECTED:
        return value
    normalised = _normalised(kind, value, raw)
    if normalised is _WRONG:
        shown = shorten(raw.strip()) if raw is not None else show(value)
        unset = " (or null: unset)" if optional else ""
        raise FieldTypeError(f"{key}={shown} must be {EXPECTED[kind]}{unset}", EXPECTED[kind])
    return normalised


_WRONG = object()


def _normalised(kind: str, value: Any, raw: str | None) -> Any:
    integer = isinstance(value, int) and not isinstance(value, bool)
    if kind == "bool":
        return value if isinstance(value, bool) else _WRONG
    if kind == "int":
        return value if integer else _WRONG
    if kind == "float":
        return float(value) if is_finite_number(value) else _WRONG
    if kind == "str":
        if raw is not None:
            return raw.strip()
        return value if isinstance(value, str) else str(value) if integer else _WRONG
    if kind == "list[int]":
        ok = isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        return list(value) if ok else _WRONG
    if kind == "list[str]":
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return list(value) if ok else _WRONG
    if kind == "tuple[float, float]":
        ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(is_finite_number(v) for v in value)
        return tuple(float(v) for v in value) if ok else _WRONG
    ok = isinstance(value, dict) and all(isinstance(k, str) for k in value)  # dict
    return value if ok else _WRONG
