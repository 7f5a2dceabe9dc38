"""The success envelope, encoded once with orjson."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel
from starlette.responses import Response

T = TypeVar("T")


class Envelope(BaseModel, Generic[T]):
    """`{"success": true, "data": ..., "message": ...}` as documented in OpenAPI."""

    success: bool = True
    data: T
    message: str | None = None


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class JSONBytes(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        if isinstance(content, bytes):
            return content
        return orjson.dumps(content, default=_default)


def ok(data: Any, message: str | None = None, status: int = 200) -> JSONBytes:
    body: dict[str, Any] = {"success": True, "data": data}
    if message is not None:
        body["message"] = message
    return JSONBytes(body, status_code=status)
