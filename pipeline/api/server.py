"""How `pipeline api` serves the app: every uvicorn setting in one place.

    from pipeline.api.server import serve
    serve(host="127.0.0.1", port=8080)

- The HTTP protocol is uvicorn's h11 one, always (not httptools when that happens to be
  installed), subclassed so that a request uvicorn cannot parse — bad framing, a header
  over h11's 16 KiB limit, a non-ASCII target — is answered 400 `MALFORMED_REQUEST` in the
  standard error body rather than uvicorn's plain text. (Every other answer comes from the
  app; nothing else in uvicorn answers on its own: no `limit_concurrency`, no WebSockets.)
- Each request runs in a fresh context (`reset_contextvars`), so no log binding leaks from
  one request to another; `pipeline.api.correlation` binds the request's id.
- An idle keep-alive connection is closed after `timeout_keep_alive` (5 s); a body has
  `API_BODY_TIMEOUT_S` to arrive and `API_MAX_BODY_BYTES` to fit (`pipeline.api.limits`).
- The objects made before serving (the app, its libraries) are moved out of the garbage
  collector's reach (`gc.freeze`): parsing a big body makes enough objects to set off full
  collections, and each would otherwise walk the whole heap holding the GIL — the longest
  stalls of `/health` while bodies are posted (`benchmarks/api_big_bodies.py`).
- Our JSON log handler formats uvicorn's records; the access log is off (`api.request`
  lines say the same, with the correlation id); no `Server` header.
"""

from __future__ import annotations

import gc
import json
import uuid
from typing import Any

import h11
import structlog
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from pipeline.errors import error_body

log = structlog.get_logger("pipeline.api")
KEEP_ALIVE_S = 5


class StandardErrorH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, its 400 for an unreadable request in our error body."""

    def send_400_response(self, msg: str) -> None:
        cid = uuid.uuid4().hex
        log.warning("api.malformed_request", correlation_id=cid, reason=msg)
        body = json.dumps(
            error_body(
                status_code=400,
                message="the HTTP request is malformed and cannot be read",
                error_code="MALFORMED_REQUEST",
                details={
                    "errors": [
                        {"field": "request", "message": "not valid HTTP/1.1", "type": "http"}
                    ]
                },
                correlation_id=cid,
            )
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            (b"x-correlation-id", cid.encode()),
        ]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()


def server_config(app: Any, *, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=StandardErrorH11Protocol,
        ws="none",
        lifespan="on",
        reset_contextvars=True,
        timeout_keep_alive=KEEP_ALIVE_S,
        log_config=None,  # uvicorn's records go through our JSON handler
        access_log=False,
        server_header=False,
    )


def serve(host: str, port: int, app: Any = None) -> None:
    """Serve `app` (by default `pipeline.api.create_app()`) until SIGINT/SIGTERM."""
    if app is None:
        from pipeline.api import create_app

        app = create_app()
    gc.freeze()  # see the module's docstring
    uvicorn.Server(server_config(app, host=host, port=port)).run()
