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

from pydantic import AfterValidator, BeforeValidator, Strict, ValidationInfo
from pydantic_core import PydanticCustomError

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


# An exact percentage written as a JSON number (2.5, 60).
JsonDecimal = Annotated[Decimal, BeforeValidator(_number_for_decimal)]


def _amount(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("decimal_type", "Input should be an amount, not a boolean")
    return value


# An amount of money: a decimal string ("250.00", exact, the way to send money) or a
# JSON number; never a boolean.
Amount = Annotated[Decimal, BeforeValidator(_amount)]

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


# A name a person gives (a competition's): refused when it holds such characters.
CleanName = Annotated[str, AfterValidator(refuse_unseen)]
CleanText = Annotated[str, AfterValidator(refuse_unseen_in_text)]
