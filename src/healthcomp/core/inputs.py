"""Input types as SPEC §4 reads a JSON body: a boolean is not a number, a string is not
a number, and text a person will see holds no control, bidirectional-override or
unpaired surrogate characters.

FastAPI validates a body after decoding its JSON (pydantic's Python mode), where a
lax `int` takes `true` as 1 and `"500"` as 500; these types refuse them. Dates stay lax
on purpose: in JSON they can only be strings.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, GetJsonSchemaHandler, Strict, ValidationInfo
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

# A whole number: an int, never a bool, a string or a float (even 5.0).
JsonInt = Annotated[int, Strict()]
# A number: an int or a float, never a bool or a string.
JsonNumber = Annotated[float, Strict()]


# Validation context for a document the service stored itself (decimals as strings), as
# an edit checks the competition it would become: the types are the service's own.
STORED = {"stored": True}


def _number_for_decimal(value: Any, info: ValidationInfo) -> Any:
    if isinstance(info.context, dict) and info.context.get("stored"):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise PydanticCustomError(
            "decimal_type", "Input should be a JSON number", {"given": type(value).__name__}
        )
    return value


class _NumberInSchema:
    """Documents a decimal as what it takes, a JSON number (pydantic's own schema of a
    `Decimal` also offers a string, which `_number_for_decimal` refuses)."""

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        number = next((s for s in schema.get("anyOf", []) if s.get("type") == "number"), None)
        if number is None:
            return schema
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        # Bounds on a validated decimal reach here under pydantic's own names.
        for ours, theirs in _BOUNDS.items():
            if ours in rest:
                rest[theirs] = rest.pop(ours)
        rest.pop("decimal_places", None)
        rest.pop("max_digits", None)
        return {**number, **rest}


_BOUNDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}


# An exact percentage written as a JSON number (2.5, 60).
JsonDecimal = Annotated[Decimal, BeforeValidator(_number_for_decimal), _NumberInSchema]


class SchemaPattern:
    """Documents what a refusing validator refuses, as a JSON Schema `pattern` (ECMA
    syntax; surrogates left out, JSON text in UTF-8 cannot carry them unpaired). On a
    type that also takes a number (an amount), on its string form."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        strings = [s for s in schema.get("anyOf", []) if s.get("type") == "string"]
        for branch in strings or [schema]:
            branch["pattern"] = self.pattern
        return schema


# Plain ASCII digits with an optional fraction: no exponent, sign, spaces, underscores or
# other scripts' digits, all of which `Decimal()` would take.
AMOUNT_PATTERN = r"^[0-9]+(\.[0-9]+)?$"
_AMOUNT = re.compile(AMOUNT_PATTERN)


def _amount(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("decimal_type", "Input should be an amount, not a boolean")
    if isinstance(value, str) and not _AMOUNT.fullmatch(value):
        raise PydanticCustomError(
            "decimal_parsing",
            "Input should be an amount written with digits and an optional decimal point, "
            "such as 250.00",
        )
    return value


# An amount of money: a decimal string ("250.00", exact, the way to send money) or a
# JSON number; never a boolean.
Amount = Annotated[Decimal, BeforeValidator(_amount), SchemaPattern(AMOUNT_PATTERN)]

# C0 and C1 controls, DEL, the bidirectional embeddings, overrides and isolates, the
# directional marks, unpaired surrogates, and the non-characters U+FFFE and U+FFFF.
_UNSEEN = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff\ufffe\uffff]"
)
# In longer text, line breaks and tabs are kept.
_UNSEEN_IN_TEXT = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069"
    "\ud800-\udfff\ufffe\uffff]"
)


def refuse_unseen(value: str) -> str:
    """A name: no control, bidirectional-override or surrogate character."""
    if _UNSEEN.search(value):
        raise ValueError("must not contain control or bidirectional-override characters")
    return value


def refuse_unseen_in_text(value: str) -> str:
    """A description: as a name, but line breaks and tabs are allowed."""
    if _UNSEEN_IN_TEXT.search(value):
        raise ValueError("must not contain control or bidirectional-override characters")
    return value


def without_unseen(value: str) -> str:
    """Text the service did not get from the user directly (a token's metadata): the
    characters a name refuses are dropped instead."""
    return _UNSEEN.sub("", value)


_UNSEEN_CLASS = "\\x00-\\x1f\\x7f-\\x9f\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069\\ufffe\\uffff"
_TEXT_UNSEEN_CLASS = "\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069\\ufffe\\uffff"
# A name: none of those characters, and not blank.
NAME_PATTERN = f"^[^{_UNSEEN_CLASS}]*[^\\s{_UNSEEN_CLASS}][^{_UNSEEN_CLASS}]*$"
TEXT_PATTERN = f"^[^{_TEXT_UNSEEN_CLASS}]*$"

# A name a person gives (a competition's): refused when it holds such characters.
CleanName = Annotated[str, AfterValidator(refuse_unseen), SchemaPattern(NAME_PATTERN)]
CleanText = Annotated[str, AfterValidator(refuse_unseen_in_text), SchemaPattern(TEXT_PATTERN)]
