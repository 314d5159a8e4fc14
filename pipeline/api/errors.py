"""Every error the API answers has the one body (`pipeline.errors.error_body`), its
correlation id, and no traceback — whichever layer answers it.

- our own errors (`PipelineError`) answer with their `code` and `http_status`;
- a request that fails validation answers 422 `INVALID_INPUT`, naming each field in
  `details.errors` (`field` as `body.enrichment.companies.0.domain`, `message`, `type`);
- a body that is not JSON at all (malformed, not UTF-8, nested too deep) answers 400
  `MALFORMED_BODY`, and a request uvicorn cannot parse 400 `MALFORMED_REQUEST`
  (`pipeline.api.server`);
- a body over `API_MAX_BODY_BYTES` answers 413 `BODY_TOO_LARGE`, one not in within
  `API_BODY_TIMEOUT_S` 408 `REQUEST_TIMEOUT` (`pipeline.api.limits`);
- an unknown path or method answers 404 / 405 (with `Allow`) in the same body;
- Postgres, Redis or the broker unreachable answers 503 `DEPENDENCY_UNAVAILABLE`;
- anything else is a bug: 500 `INTERNAL_ERROR`, the traceback in our log, not the answer
  (`pipeline.api.correlation`, which also keeps the connection usable).

No message or field name holds a value the caller sent: messages name the field instead,
and a field name that is not one of ours (an unknown key) is not repeated.
"""

from __future__ import annotations

import re
from typing import Any

import kombu.exceptions
import redis
import sqlalchemy.exc
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.routing import Match

from pipeline.correlation import LOG_KEY
from pipeline.errors import (
    DATABASE_ERRORS,
    DependencyUnavailableError,
    InputError,
    PipelineError,
    error_body,
)

HEADER = "X-Correlation-ID"
log = structlog.get_logger("pipeline.api")

HTTP_CODES = {
    400: "MALFORMED_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT",
    413: "BODY_TOO_LARGE",
}
DEPENDENCY_ERRORS = (
    *DATABASE_ERRORS,
    redis.RedisError,
    kombu.exceptions.OperationalError,
)
# A location part of ours: a field name or a list index. Anything else came from the caller.
_OUR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# pydantic context entries that are facts of our schema, not of the value sent.
_SCHEMA_FACTS = {
    "gt",
    "ge",
    "lt",
    "le",
    "min_length",
    "max_length",
    "pattern",
    "expected",
    "multiple_of",
    "discriminator",
    "expected_tags",
}


class ErrorBody(BaseModel):
    """The one error body, for the OpenAPI docs (built by `pipeline.errors.error_body`)."""

    error: bool
    status_code: int
    message: str
    details: dict[str, Any]
    error_code: str
    correlation_id: str
    timestamp: str


def error_body_of(scope_state: dict[str, Any] | None, **fields: Any) -> dict[str, Any]:
    """`error_body(...)` with the request's correlation id (from its scope's state)."""
    cid = (scope_state or {}).get(LOG_KEY)
    return error_body(correlation_id=cid, **fields)


def error_response(
    request: Request,
    status_code: int,
    error_code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = error_body_of(
        request.scope.get("state"),
        status_code=status_code,
        message=message,
        error_code=error_code,
        details=details,
    )
    return JSONResponse(
        body, status_code=status_code, headers={**(headers or {}), HEADER: body["correlation_id"]}
    )


def field_error(field: str, message: str, kind: str = "value_error") -> dict[str, str]:
    return {"field": field, "message": message, "type": kind}


def invalid_field(field: str, message: str) -> InputError:
    """A 422 for one field, shaped like pydantic's: for checks a model cannot make alone."""
    return InputError(
        f"invalid request: {field}: {message}", details={"errors": [field_error(field, message)]}
    )


def located(exc: InputError, prefix: str) -> InputError:
    """`exc` (from `pipeline.enqueue`, its fields named after the arguments) with its fields
    named as the client sent them (`companies.2` → `body.companies.2`)."""
    errors = exc.details.get("errors") or [field_error("", exc.message)]
    return InputError(
        exc.message,
        details={
            "errors": [
                {**e, "field": ".".join(p for p in (prefix, e["field"]) if p)} for e in errors
            ]
        },
    )


async def pipeline_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PipelineError)
    details = exc.details
    if isinstance(exc, InputError) and not details.get("errors"):
        details = {**details, "errors": [field_error("request", exc.message)]}
    return error_response(request, exc.http_status, exc.code, exc.message, details)


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(
        str(part) if isinstance(part, int) or _OUR_NAME.fullmatch(str(part)) else "(unknown)"
        for part in loc
    )


def _message(error: dict[str, Any]) -> str:
    """pydantic's message, less any part drawn from the value (a parse error's detail, a
    discriminator tag the caller sent)."""
    context = error.get("ctx") or {}
    if error["type"] == "union_tag_invalid":
        return f"must be one of {context.get('expected_tags', 'the documented values')}"
    message = str(error["msg"])
    if error["type"] == "value_error":  # our own validators' messages, written without values
        return message.removeprefix("Value error, ")
    if set(context) - _SCHEMA_FACTS:
        return message.split(",", 1)[0]
    return message


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        field_error(_location(error["loc"]), _message(error), error["type"])
        for error in exc.errors()
    ]
    if any(error["type"] == "json_invalid" for error in errors):
        message = "the body is not JSON (well-formed, UTF-8, nested at most 200 deep)"
        body_errors = [field_error("body", message, "json_invalid")]
        return error_response(request, 400, "MALFORMED_BODY", message, {"errors": body_errors})
    named = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return error_response(
        request, 422, InputError.code, f"invalid request: {named}", {"errors": errors}
    )


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = HTTP_CODES.get(exc.status_code, f"HTTP_{exc.status_code}")
    headers = dict(exc.headers or {})
    details: dict[str, Any] = getattr(exc, "details", None) or {}
    if exc.status_code == 405:
        allowed = _allowed_methods(request)
        headers["Allow"] = ", ".join(allowed)
        details = {"allowed_methods": allowed}
    return error_response(request, exc.status_code, code, str(exc.detail), details, headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (FastAPI's `Allow` names only those of
    the first route that matched it)."""
    return [
        method
        for method in ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
        if any(
            route.matches({**_bare_scope(request), "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    ]


def _bare_scope(request: Request) -> dict[str, Any]:
    scope = request.scope
    return {"type": "http", "path": scope["path"], "root_path": scope.get("root_path", "")}


async def dependency_error(request: Request, exc: Exception) -> JSONResponse:
    what = "the database" if isinstance(exc, sqlalchemy.exc.SQLAlchemyError) else "Redis"
    if isinstance(exc, kombu.exceptions.OperationalError):
        what = "the broker"
    log.warning("api.dependency_unavailable", error=type(exc).__name__)
    return error_response(
        request,
        503,
        DependencyUnavailableError.code,
        f"{what} is unreachable ({type(exc).__name__}); try again shortly",
    )


async def last_resort(request: Request, exc: Exception) -> JSONResponse:
    """Only for an error raised outside `RequestScopeMiddleware` (which answers every other
    one itself, without the re-raise that Starlette's handler for this one does)."""
    log.error("api.unexpected_error", error=type(exc).__name__, exc_info=exc)
    return error_response(request, 500, "INTERNAL_ERROR", "internal error; see the server log")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(PipelineError, pipeline_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    for error in DEPENDENCY_ERRORS:
        app.add_exception_handler(error, dependency_error)
    app.add_exception_handler(Exception, last_resort)
