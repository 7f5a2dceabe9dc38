from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from healthcomp.core.inputs import NAME_PATTERN, SchemaPattern, refuse_unseen


def _clean_name(value: str) -> str:
    refuse_unseen(value)
    value = " ".join(value.split())
    if not value:
        raise ValueError("must not be blank")
    return value


def _check_url(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not re.fullmatch(r"https?://\S+", value):
        raise ValueError("must be an http(s) URL")
    return value


DisplayName = Annotated[
    str,
    Field(min_length=1, max_length=80),
    AfterValidator(_clean_name),
    SchemaPattern(NAME_PATTERN),
]
AvatarUrl = Annotated[
    str | None, Field(max_length=2048, pattern=r"^(https?://\S+)?$"), AfterValidator(_check_url)
]


class ProfileUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    display_name: DisplayName | None = None
    avatar_url: AvatarUrl = None


class Profile(BaseModel):
    user_id: str
    display_name: str
    avatar_url: str | None
    email: str | None
    created_at: str
    updated_at: str
