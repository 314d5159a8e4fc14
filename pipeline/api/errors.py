"""Every error the API answers has the one body (`pipeline.errors.error_body`), its
correlation id, and no traceback.

- our own errors (`PipelineError`) answer with their `code` and `http_status`;
- a request that fails validation answers 422 `INVALID_INPUT`, naming each field in
  `details.errors` (`field` as `body.companies.0.domain`, `message`, `type`); the value
  given is not echoed back;
- an unknown path or method answers 404 / 405 in the same body;
- Postgres, Redis or the broker unreachable answers 503 `DEPENDENCY_UNAVAILABLE`;
- anything else is a bug: 500 `INTERNAL_ERROR`, the traceback in our log, not the answer.
"""

from __future__ import annotations

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

from pipeline.api.correlation import HEADER
from pipeline.errors import (
    DATABASE_ERRORS,
    DependencyUnavailableError,
    InputError,
    PipelineError,
    error_body,
)

log = structlog.get_logger("pipeline.api")

HTTP_CODES = {401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}
DEPENDENCY_ERRORS = (
    *DATABASE_ERRORS,
    redis.RedisError,
    kombu.exceptions.OperationalError,
)


class ErrorBody(BaseModel):
    """The one error body, for the OpenAPI docs (built by `pipeline.errors.error_body`)."""

    error: bool
    status_code: int
    message: str
    details: dict[str, Any]
    error_code: str
    correlation_id: str
    timestamp: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (401, "no API key, or an unknown or revoked one"),
        (404, "no such thing, or another tenant's"),
        (422, "bad input; `details.errors` names each field"),
        (503, "Postgres, Redis or the broker unreachable"),
    )
}


def invalid_field(field: str, message: str) -> InputError:
    """A 422 for one field, shaped like pydantic's: for checks a model cannot make alone."""
    return InputError(
        f"invalid request: {field}: {message}",
        details={"errors": [{"field": field, "message": message, "type": "value_error"}]},
    )


def error_response(
    request: Request,
    status_code: int,
    error_code: str,
    message: str,
    details: dict[str, Any] | None = None,
) -> JSONResponse:
    cid = getattr(request.state, "correlation_id", None)
    body = error_body(
        status_code=status_code,
        message=message,
        error_code=error_code,
        details=details,
        correlation_id=cid,
    )
    return JSONResponse(body, status_code=status_code, headers={HEADER: body["correlation_id"]})


async def pipeline_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PipelineError)
    return error_response(request, exc.http_status, exc.code, exc.message, exc.details)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "field": ".".join(str(part) for part in error["loc"]),
            "message": str(error["msg"]).removeprefix("Value error, "),
            "type": error["type"],
        }
        for error in exc.errors()
    ]
    named = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return error_response(
        request, 422, InputError.code, f"invalid request: {named}", {"errors": errors}
    )


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = HTTP_CODES.get(exc.status_code, f"HTTP_{exc.status_code}")
    return error_response(request, exc.status_code, code, str(exc.detail))


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


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("api.unexpected_error", error=type(exc).__name__, exc_info=exc)
    return error_response(request, 500, "INTERNAL_ERROR", "internal error; see the server log")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(PipelineError, pipeline_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    for error in DEPENDENCY_ERRORS:
        app.add_exception_handler(error, dependency_error)
    app.add_exception_handler(Exception, unexpected_error)
