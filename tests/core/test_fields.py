"""The one field checker (supermask.core.fields) every config dataclass uses."""

from __future__ import annotations

import dataclasses

import pytest

import supermask
from supermask.core.fields import FieldTypeError, check_value
from supermask.core.methods.iterand import IteRandOptions
from supermask.runconfig import RunConfig, load_run_config


def _fields(annotation: object) -> tuple[dataclasses.Field, ...]:  # type: ignore[type-arg]
    from supermask import runconfig

    cls = getattr(runconfig, str(annotation), None)
    return dataclasses.fields(cls) if dataclasses.is_dataclass(cls) else ()


@pytest.mark.parametrize(
    ("value", "annotation", "expected"),
    [
        (3, "float", 3.0),
        (True, "bool", True),
        (7, "int", 7),
        (None, "int | None", None),
        (12, "str", "12"),
        ([0.5, 1], "tuple[float, float]", (0.5, 1.0)),
        ([5, 6], "list[int]", [5, 6]),
        ({"a": 1}, "dict[str, Any]", {"a": 1}),
        (object, "Any", object),
    ],
)
def test_a_value_of_its_type_comes_back_normalised(value, annotation, expected) -> None:  # type: ignore[no-untyped-def]
    got = check_value("key", value, annotation)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    ("value", "annotation", "message"),
    [
        ("n", "bool", "key='n' must be true or false"),
        (1, "bool", "key=1 must be true or false"),
        (1.5, "int", "key=1.5 must be an integer"),
        (True, "int", "key=True must be an integer"),
        (float("nan"), "float", "key=nan must be a finite number"),
        (10**400, "float", "must be a finite number"),
        (False, "float", "key=False must be a finite number"),
        ([1], "tuple[float, float]", "must be a list of two numbers"),
        ([], "list[int]", "must be a non-empty list of integers"),
        ({1: 2}, "dict[str, Any]", "must be a mapping with names as keys"),
        (None, "float", "key cannot be null"),
        (1.5, "str", "key=1.5 must be a string"),
    ],
)
def test_a_value_of_another_type_is_one_line_naming_it(value, annotation, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FieldTypeError) as caught:
        check_value("key", value, annotation)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_an_optional_field_says_that_null_is_allowed_too() -> None:
    with pytest.raises(FieldTypeError, match=r"data.augment='auto' must be true or false \(or null: unset\)$"):
        check_value("data.augment", "auto", "bool | None")
    with pytest.raises(FieldTypeError, match=r"train.epochs=1.5 must be an integer$"):
        check_value("train.epochs", 1.5, "int")


def test_the_text_typed_is_kept_for_a_string_and_shown_in_errors() -> None:
    assert check_value("train.run_name", 0.1, "str | None", raw=" 0.10") == "0.10"
    with pytest.raises(FieldTypeError, match="train.epochs=1.50 must be an integer"):
        check_value("train.epochs", 1.5, "int", raw="1.50")


def test_every_config_dataclass_goes_through_it() -> None:
    """The same rule in the supermask config, a method's options and the run config's sections."""
    with pytest.raises(supermask.SupermaskConfigError, match="scale_fan='n' must be true or false"):
        supermask.SupermaskConfig(scale_fan="n")  # type: ignore[arg-type]
    with pytest.raises(supermask.SupermaskConfigError, match="option rate=nan of method 'iterand' must be finite"):
        supermask.SupermaskConfig(method="iterand", options={"rate": float("nan")})
    with pytest.raises(supermask.SupermaskConfigError, match="optim.lr=abc must be a finite number"):
        load_run_config(None, ["optim.lr=abc"])
    kinds = {str(f.type) for cls in (supermask.SupermaskConfig, IteRandOptions) for f in dataclasses.fields(cls)}
    kinds |= {str(f.type) for section in dataclasses.fields(RunConfig) for f in _fields(section.type)}
    assert {"float", "int", "bool", "str"} <= kinds
