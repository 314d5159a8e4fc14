"""Correlation ids for web requests, as ASGI middleware.

An incoming `X-Correlation-ID` is kept when it is fit to carry (`pipeline.correlation.
carriable`), else a new id is made; it is bound into every log line of the request, handed
to the tasks the request enqueues (their `x_correlation_id` header), and returned in the
response's `X-Correlation-ID` header. One log line per request says what was asked, how it
ended and how long it took.

Pure ASGI rather than `BaseHTTPMiddleware`: the id is bound in the request's own context, so
the endpoint (run in a worker thread with a copy of that context) sees it too.
"""

from __future__ import annotations

import time

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.correlation import carriable, correlation_scope

HEADER = "X-Correlation-ID"
log = structlog.get_logger("pipeline.api")


class CorrelationIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = carriable(Headers(scope=scope).get(HEADER))
        with correlation_scope(incoming) as cid:
            scope.setdefault("state", {})["correlation_id"] = cid
            started = time.perf_counter()
            status = 500

            async def send_with_id(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    MutableHeaders(scope=message)[HEADER] = cid
                await send(message)

            try:
                await self.app(scope, receive, send_with_id)
            finally:
                log.info(
                    "api.request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 1),
                )
