"""Bounds on a request body: its size (`API_MAX_BODY_BYTES`) and how long it may take to
arrive (`API_BODY_TIMEOUT_S`, from the start of the request), as ASGI middleware.

A `Content-Length` over the limit is refused with 413 before a byte of the body is read; a
body sent without one (chunked) is counted as it is read and refused once it passes the
limit. A body still incomplete at the deadline is given up with 408, so a client trickling
bytes cannot hold a connection and a worker thread for as long as it likes. Both answers
carry `Connection: close` — the rest of the body is never read, so the connection cannot
serve another request — and the standard error body.

The bounds are raised from `receive`, as Starlette `HTTPException`s: FastAPI lets those
through its body reading, and `pipeline.api.errors.http_error` answers them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.api.errors import HEADER, HTTP_CODES, error_body_of

CLOSE = {"Connection": "close"}


class BodyTooLargeError(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the body is over {limit} bytes (API_MAX_BODY_BYTES)", CLOSE)
        self.details = {"limit_bytes": limit}


class BodyTimeoutError(HTTPException):
    def __init__(self, timeout_s: float) -> None:
        message = f"the body did not arrive within {timeout_s:g} s (API_BODY_TIMEOUT_S)"
        super().__init__(408, message, CLOSE)
        self.details = {"timeout_s": timeout_s}


class BodyLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app, self.max_bytes, self.timeout_s, self.clock = app, max_bytes, timeout_s, clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            await _answer(scope, receive, send, BodyTooLargeError(self.max_bytes))
            return
        deadline = self.clock() + self.timeout_s
        received = 0
        complete = False

        async def bounded_receive() -> Message:
            nonlocal received, complete
            if complete:  # the body is in: later reads wait for a disconnect, unbounded
                return await receive()
            remaining = deadline - self.clock()
            try:
                if remaining <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(receive(), remaining)
            except TimeoutError:
                raise BodyTimeoutError(self.timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError(self.max_bytes)
                complete = not message.get("more_body", False)
            return message

        await self.app(scope, bounded_receive, send)


async def _answer(scope: Scope, receive: Receive, send: Send, exc: HTTPException) -> None:
    body = error_body_of(
        scope.get("state"),
        status_code=exc.status_code,
        message=exc.detail,
        error_code=HTTP_CODES[exc.status_code],
        details=getattr(exc, "details", None),
    )
    headers = {**(exc.headers or {}), HEADER: body["correlation_id"]}
    await JSONResponse(body, status_code=exc.status_code, headers=headers)(scope, receive, send)
