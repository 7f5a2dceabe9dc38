"""Logs: one JSON object per line in production, readable lines in development, an
access line per request, and the request's id on every line logged while it runs.

The id comes from the client's `X-Request-ID` when it is a plain token (letters,
digits, `.`, `_`, `:`, `-`; at most 128), else it is made here; the response carries
it back. The access line names the route's template (`/api/v1/leaderboard/{competition_id}`),
never the query string (a WebSocket or a careless client may put a token there), and
the caller's user id or role once the token was verified. Nothing here ever logs a
header's value other than the request id.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The request being served by this task: {"id", "user"} (a dict, so that what the
# route learns, the user, is seen by the middleware that logs the access line).
REQUEST: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "healthcomp_request", default=None
)
ACCESS = logging.getLogger("healthcomp.access")
_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


def note_user(user: str) -> None:
    """Who the request turned out to be (for its access line)."""
    state = REQUEST.get()
    if state is not None:
        state["user"] = user


class _RequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        state = REQUEST.get()
        record.request_id = state["id"] if state is not None else None
        return True


def _time(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, the access
    line's fields, the exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            out["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if fields:
            out.update(fields)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


class TextFormatter(logging.Formatter):
    """`time level logger [request id] message`, for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        rid = f" [{request_id}]" if request_id else ""
        line = f"{_time(record)} {record.levelname:<7} {record.name}{rid} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(level: str, *, json: bool) -> None:
    """The process's logging: one handler on stderr, JSON or text, with request ids.
    Every library's loggers (uvicorn's too) propagate to it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    handler.addFilter(_RequestId())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel("DEBUG" if level == "trace" else level.upper())


def _route(scope: Scope) -> tuple[str, bool]:
    """The route's template when the framework matched one (with the prefix of the
    router it was included under, which the route's own template lacks), else the
    lean path's name for it, else the path itself; and whether it is a template (a
    path no route serves must not become a metric's label: there is no end to them)."""
    path = str(scope.get("path", ""))
    template = getattr(scope.get("route"), "path_format", None)
    if isinstance(template, str):
        try:
            concrete = template.format(**scope.get("path_params", {}))
        except (KeyError, IndexError, ValueError):
            return template, True
        if path.endswith(concrete):
            return path[: len(path) - len(concrete)] + template, True
        return template, True
    named = scope.get("healthcomp.route")
    return (named, True) if isinstance(named, str) else (path, False)


def note_error(code: str) -> None:
    """The error code the request was answered with (for its access line and metrics)."""
    state = REQUEST.get()
    if state is not None:
        state["error"] = code


def note_records(count: int) -> None:
    """How many activity records the request carried (a sync; for the metrics)."""
    state = REQUEST.get()
    if state is not None:
        state["records"] = count


class RequestLog:
    """Outermost: gives each request its id (and the response the `X-Request-ID`
    header), and logs its access line when it is done."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Imported by the worker that builds the app, not by `healthcomp serve`'s parent
        # before it has set the metrics' directory (cli.metrics_directory).
        from healthcomp.core import metrics

        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        rid = given.decode() if given is not None and _ID.match(given) else os.urandom(8).hex()
        header = (b"x-request-id", rid.encode())
        state: dict[str, Any] = {"id": rid, "user": None, "error": None}
        token = REQUEST.set(state)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            method = scope["method"]
            route, templated = _route(scope)
            self._count(scope, method, route if templated else "unmatched", status, seconds, state)
            if ACCESS.isEnabledFor(logging.INFO):
                ms = round(seconds * 1000, 2)
                fields = {
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": ms,
                    "user": state["user"],
                }
                if state["error"] is not None:
                    fields["error"] = state["error"]
                ACCESS.info(
                    "%s %s %d %.2f ms %s%s",
                    method,
                    route,
                    status,
                    ms,
                    state["user"] or "-",
                    f" {state['error']}" if state["error"] else "",
                    extra={"fields": fields},
                )
            REQUEST.reset(token)

    def _count(
        self,
        scope: Scope,
        method: str,
        route: str,
        status: int,
        seconds: float,
        state: dict[str, Any],
    ) -> None:
        m = self.metrics
        if method not in _METHODS:
            method = "other"  # any token is a method to HTTP: no label per made-up one
        m.REQUESTS.add((method, route, status))
        m.LATENCY.observe((method, route), seconds)
        if method == "POST" and scope["path"] == m.SYNC_PATH:
            # How many records it carried when its body was read as JSON (the lean
            # sync notes it); a body refused before (size, type) counts none.
            records = state.get("records", 0)
            accepted = status < 400
            result = "accepted" if accepted else "rejected"
            reason = "ok" if accepted else (state["error"] or str(status))
            m.SYNC_COUNTS.add((result, reason))
            if records:
                m.RECORD_COUNTS.add((result, reason), records)
