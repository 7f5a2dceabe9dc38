"""The error envelope of SPEC §4, and the handlers that put every error in it.

Every error the service can produce, framework ones included, leaves as
`{"success": false, "error": <code>, "message": <sentence>, "code": <status>}`.

A Redis that cannot be reached, or that refuses a command for now (a replica during a
failover, memory full, a long script, an AOF being loaded), answers 503 with
`Retry-After`; any other Redis error is a bug and answers 500.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    CrossSlotTransactionError,
    InvalidPipelineStack,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import compile_path

from healthcomp.core.logs import note_error

log = logging.getLogger("healthcomp.errors")


class AppError(Exception):
    """An error with a stable code that clients can switch on."""

    status = 400
    error = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        error: str | None = None,
        status: int | None = None,
        details: Sequence[Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if error is not None:
            self.error = error
        if status is not None:
            self.status = status
        self.details = list(details) if details is not None else None
        self.headers = headers or {}


class Unauthorized(AppError):
    status = 401
    error = "unauthorized"

    def __init__(self, message: str = "A valid bearer token is required.") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(AppError):
    status = 403
    error = "forbidden"


class NotFound(AppError):
    status = 404
    error = "not_found"


class Conflict(AppError):
    status = 409
    error = "conflict"


class ValidationFailed(AppError):
    status = 422
    error = "validation_error"


class PayloadTooLarge(AppError):
    status = 413
    error = "payload_too_large"


class ServiceUnavailable(AppError):
    status = 503
    error = "service_unavailable"

    def __init__(self, message: str = "The datastore is unreachable; try again shortly.") -> None:
        super().__init__(message, headers={"Retry-After": "2"})


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}

_STATUS_MESSAGES = {
    404: "No such resource.",
    405: "This method is not allowed on this route.",
    413: "The request body is too large.",
    500: "Something went wrong on our side; it has been logged.",
}


# Error codes with which Redis refuses a command it did not run and would run later:
# READONLY (a replica, e.g. while a failover promotes another node), OOM (maxmemory
# reached under noeviction), BUSY (a script past its time limit), LOADING (reading its
# AOF or RDB at start), MASTERDOWN (a replica that lost its master and must not serve
# stale data), NOREPLICAS (min-replicas-to-write not met), MISCONF (its last snapshot
# failed, writes stopped), TRYAGAIN and CLUSTERDOWN (a cluster resharding or healing).
UNAVAILABLE_CODES = frozenset(
    {
        "BUSY",
        "CLUSTERDOWN",
        "LOADING",
        "MASTERDOWN",
        "MISCONF",
        "NOREPLICAS",
        "OOM",
        "READONLY",
        "TRYAGAIN",
    }
)

# redis-py raises these classes for some codes, and strips the code from the message.
_CLASS_CODES: tuple[tuple[type[Exception], str], ...] = (
    (ReadOnlyError, "READONLY"),
    (OutOfMemoryError, "OOM"),
    (BusyLoadingError, "LOADING"),
    (MasterDownError, "MASTERDOWN"),
    (ClusterDownError, "CLUSTERDOWN"),
    (TryAgainError, "TRYAGAIN"),
)

# An unmapped code stays at the start of the message ("BUSY Redis is busy running a
# script..."). Redis 7 keeps the code of an error raised by redis.call inside a script
# and appends " script: <sha>, on @user_script:N."; Redis 6.2 wraps it:
# "Error running script (call to f_<sha>): @user_script:1: @user_script: 1: -OOM ...".
_LEADING_CODE = re.compile(r"([A-Z]+) ")
_SCRIPT_CODE = re.compile(r"(?:^|: )@user_script: \d+: -([A-Z]+) ")


def refusal_code(exc: BaseException) -> str | None:
    """The Redis error code when `exc` is Redis refusing a command for now (503 material),
    else None: a connection failure, or a bug such as WRONGTYPE or a script error."""
    for cls, code in _CLASS_CODES:
        if isinstance(exc, cls):
            return code
    if not isinstance(exc, ResponseError):
        return None
    message = str(exc)
    found = _LEADING_CODE.match(message)
    if found is None and message.startswith(("Error running script", "@user_script")):
        found = _SCRIPT_CODE.search(message)
    if found is not None and found.group(1) in UNAVAILABLE_CODES:
        return found.group(1)
    return None


def datastore_unavailable(exc: BaseException) -> bool:
    """True when `exc` means Redis is unreachable, hung or refusing for now; False for a
    bug (a wrong command, WRONGTYPE, a script error, keys across cluster slots)."""
    if isinstance(exc, CrossSlotTransactionError | InvalidPipelineStack):
        return False
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | RedisClusterException):
        return True
    return refusal_code(exc) is not None


def error_body(
    status: int, error: str, message: str, details: Sequence[Any] | None = None
) -> bytes:
    note_error(error)
    body: dict[str, Any] = {"success": False, "error": error, "message": message, "code": status}
    if details:
        body["details"] = list(details)
    return orjson.dumps(body)


def error_response(
    status: int,
    error: str,
    message: str,
    details: Sequence[Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    return Response(
        error_body(status, error, message, details),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


# An input nested deeper than this is not echoed back (an echo is at most 200 bytes
# anyway); copying a JSON value nested hundreds deep overflowed the stack (a 500).
_ECHO_DEPTH = 32


class _TooDeep(ValueError):
    pass


def _jsonable(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if depth >= _ECHO_DEPTH:
        raise _TooDeep
    if isinstance(value, list | tuple):
        return [_jsonable(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    return str(value)


def _printable(text: str) -> str:
    """Text that can be encoded as JSON: an unpaired surrogate (which JSON's \\u escapes
    can put in a key or a value) becomes U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)
    return text


def validation_details(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic errors as `{field, message, type}` items, the field as a dotted path."""
    out: list[dict[str, Any]] = []
    for err in errors:
        # "batch"/"record" are the tags of the sync body's two shapes, not fields.
        skip = ("body", "query", "path", "batch", "record")
        loc = [str(p) for p in err.get("loc", ()) if p not in skip]
        item: dict[str, Any] = {
            "field": _printable(".".join(loc)) or None,
            "message": _printable(str(err.get("msg", "invalid"))),
            "type": str(err.get("type", "invalid")),
        }
        if err.get("type") == "json_invalid":
            item["field"] = None
            item["message"] = (
                f"The body is not valid JSON ({err.get('ctx', {}).get('error', 'syntax error')})."
            )
        elif "input" in err and err.get("type") != "missing":
            # Echo a small input back; never a whole 400-record batch, never what JSON
            # cannot carry back (an integer beyond 64 bits, an unpaired surrogate), and
            # never a value nested deeper than an echo needs.
            try:
                value = _jsonable(err["input"])
                echo = orjson.dumps(value)
            except (orjson.JSONEncodeError, TypeError, _TooDeep):
                echo = None
            if echo is not None and len(echo) <= 200:
                item["input"] = value
        out.append(item)
    return out


def _allowed_methods(request: Request) -> list[str]:
    """Every method served on the request's path, from the OpenAPI paths (routers are
    included lazily, so the route list alone does not show them all)."""
    table: list[tuple[re.Pattern[str], set[str]]] | None = getattr(
        request.app.state, "allow_table", None
    )
    if table is None:
        table = []
        for path, operations in request.app.openapi().get("paths", {}).items():
            regex, _, _ = compile_path(path)
            table.append((regex, {m.upper() for m in operations if m != "parameters"}))
        request.app.state.allow_table = table
    methods: set[str] = set()
    for regex, verbs in table:
        if regex.match(request.url.path):
            methods |= verbs
    return sorted(methods)


def _unreachable(exc: Exception) -> Response:
    log.warning("redis unavailable: %s", exc)
    _count_redis_error("unreachable")
    return error_response(
        503,
        "service_unavailable",
        "The datastore is unreachable; try again shortly.",
        headers={"Retry-After": "2"},
    )


def _refused(exc: Exception) -> Response | None:
    code = refusal_code(exc)
    if code is None:
        return None
    log.warning("redis refused a command (%s), answering 503: %s", code, exc)
    _count_redis_error(code.lower())
    return error_response(
        503,
        "service_unavailable",
        "The datastore cannot take this request right now; try again shortly.",
        headers={"Retry-After": "2"},
    )


def _count_redis_error(kind: str) -> None:
    # Imported here, on this rare path: `healthcomp serve`'s parent imports this module
    # before it has set the metrics' directory (cli.metrics_directory).
    from healthcomp.core.metrics import REDIS_ERRORS

    REDIS_ERRORS.labels(kind).inc()


def _internal(exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", _STATUS_MESSAGES[500])


def known_error_response(exc: Exception) -> Response | None:
    """The answer to an AppError (its envelope) or to Redis unreachable or refusing
    (503); None for anything else, a bug (500). The exception handlers below and the
    lean routes, which run below the framework, both answer with it."""
    if isinstance(exc, AppError):
        return error_response(exc.status, exc.error, exc.message, exc.details, exc.headers)
    if isinstance(exc, CrossSlotTransactionError | InvalidPipelineStack):
        return None
    if isinstance(exc, BusyLoadingError | ResponseError):
        return _refused(exc)
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | RedisClusterException):
        return _unreachable(exc)
    return None


def install_error_handlers(app: FastAPI) -> None:
    async def known(_: Request, exc: Exception) -> Response:
        return known_error_response(exc) or _internal(exc)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        status = exc.status_code
        headers = dict(exc.headers or {})
        if status == 405:
            # Starlette names the methods of the first route matching the path only.
            headers["Allow"] = ", ".join(_allowed_methods(request))
        code = _STATUS_CODES.get(status, "error")
        detail = exc.detail if isinstance(exc.detail, str) else None
        default = _STATUS_MESSAGES.get(status, "The request could not be served.")
        message = default if detail in (None, "Not Found", "Method Not Allowed") else detail
        return error_response(status, code, str(message), None, headers)

    async def validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        details = validation_details(exc.errors())
        fields = ", ".join(sorted({d["field"] for d in details if d["field"]}))
        message = f"Invalid request: {fields}." if fields else "Invalid request body."
        return error_response(422, "validation_error", message, details)

    async def unexpected(_: Request, exc: Exception) -> Response:
        return _internal(exc)

    app.add_exception_handler(AppError, known)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(RedisConnectionError, known)
    app.add_exception_handler(RedisTimeoutError, known)
    # A ConnectionError subclass, but an answer from a server that is up.
    app.add_exception_handler(BusyLoadingError, known)
    # CLUSTERDOWN, TRYAGAIN, READONLY, OOM and the rest are ResponseErrors; so are bugs.
    app.add_exception_handler(ResponseError, known)
    # A cluster that cannot be reached raises RedisClusterException ("cannot be
    # connected", slot not covered), which is not a RedisError. An outage, not a bug;
    # but two subclasses are bugs.
    app.add_exception_handler(RedisClusterException, known)
    for bug in (CrossSlotTransactionError, InvalidPipelineStack):
        app.add_exception_handler(bug, unexpected)
    app.add_exception_handler(Exception, unexpected)
