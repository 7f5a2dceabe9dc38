"""OpenAPI that tells the truth about errors.

FastAPI documents 422 as its own `HTTPValidationError` shape; this service answers every
error, 422 included, with the SPEC §4 envelope. The schema is rewritten once so that a
schema-driven client or fuzzer sees the envelope on 422 and on every other error.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    success: Literal[False] = False
    error: str = Field(examples=["validation_error"], description="A stable code")
    message: str = Field(examples=["Invalid request: records.0.steps."])
    code: int = Field(examples=[422], description="The HTTP status")
    details: list[dict[str, Any]] | None = Field(
        None, description="For 422: `{field, message, type, input?}` per invalid field"
    )


_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_ERROR_CONTENT = {"application/json": {"schema": _ERROR_REF}}


def install_openapi(app: FastAPI) -> None:
    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        components["Error"] = ErrorBody.model_json_schema()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if "422" in responses:
                    responses["422"] = {"description": "Invalid input", "content": _ERROR_CONTENT}
                responses["default"] = {
                    "description": "Any error, in the SPEC §4 envelope",
                    "content": _ERROR_CONTENT,
                }
        app.openapi_schema = schema
        return schema

    app.openapi = build  # type: ignore[method-assign]
