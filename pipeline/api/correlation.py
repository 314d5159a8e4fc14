"""Each request's scope, as the outermost ASGI middleware: its correlation id, its one log
line, and the 500 for anything nothing else answered.

An incoming `X-Correlation-ID` is kept when it is fit to carry (`pipeline.correlation.
carriable`), else a new id is made. The log context is cleared and the id bound at the
start of every request — a request's task may start from a context another request left
bindings in — so every log line of the request carries its own id, and no other; the
endpoint, run in a worker thread with a copy of that context, sees it too. It is handed to
the tasks the request enqueues (their `x_correlation_id` header) and returned in the
response's `X-Correlation-ID` header.

An exception nothing inside answered is logged once, with its traceback and the id, and
answered 500 `INTERNAL_ERROR` in the standard body. It is not raised on: Starlette's own
handler re-raises, and uvicorn then drops the keep-alive connection without a word, so a
client's next request on it fails with a reset.

Pure ASGI rather than `BaseHTTPMiddleware`, so the id is bound in the request's own context.
"""

from __future__ import annotations

import time
import uuid

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.api.errors import HEADER
from pipeline.correlation import LOG_KEY, carriable
from pipeline.errors import error_body

log = structlog.get_logger("pipeline.api")


class CorrelationIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cid = carriable(Headers(scope=scope).get(HEADER)) or uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**{LOG_KEY: cid})
        scope.setdefault("state", {})[LOG_KEY] = cid
        started = time.perf_counter()
        status: int | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[HEADER] = cid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            log.error("api.unexpected_error", error=type(exc).__name__, exc_info=exc)
            if status is None:  # else the response is cut short: nothing more can be said
                body = error_body(
                    status_code=500,
                    message="internal error; see the server log",
                    error_code="INTERNAL_ERROR",
                    correlation_id=cid,
                )
                await JSONResponse(body, status_code=500)(scope, receive, send_with_id)
        finally:
            log.info(
                "api.request",
                method=scope["method"],
                path=scope["path"][:200],  # a path is the caller's: bounded in our log
                status=status or 500,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )
            structlog.contextvars.clear_contextvars()
