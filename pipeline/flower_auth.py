"""Flower behind basic auth on every path, not only where Flower puts it.

Flower checks credentials in the handlers decorated `@tornado.web.authenticated` (and in
its API's `prepare`); `/metrics`, `/healthcheck`, `/static/...`, `/login` and its 404 page
answer anyone — `/metrics` lists every worker and task name. `AuthenticatedFlower` checks
the `Authorization` header once, in `find_handler`, before any handler is chosen: without
credentials from `FLOWER_BASIC_AUTH` (Flower's own `basic_auth` option, which `pipeline
flower` sets) every path answers 401 with `WWW-Authenticate`, as Flower's own handlers do.
With no credentials configured, nothing is served at all.

    from pipeline.flower_auth import require_auth_everywhere
    require_auth_everywhere()   # before Flower's command builds its app
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any

import flower.command
import tornado.web
from flower.app import Flower
from tornado.httputil import HTTPServerRequest


def credentials_match(authorization: str | None, accepted: list[str]) -> bool:
    """Whether an `Authorization: Basic ...` header carries one of `accepted`
    (`user:password`), compared in constant time."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme != "Basic" or not accepted:
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    found = False
    for credential in accepted:  # every one compared: no early exit to time
        found |= hmac.compare_digest(credential.encode(), given.encode())
    return found


class Unauthorized(tornado.web.RequestHandler):
    """401 to any method, before the handler the path would reach is even built."""

    def check_xsrf_cookie(self) -> None:
        """Nothing to protect: every request is refused (and says why, 401, not 403)."""

    def prepare(self) -> None:
        self.set_status(401)
        self.set_header("WWW-Authenticate", 'Basic realm="flower"')
        self.finish("Access denied")


class AuthenticatedFlower(Flower):
    def find_handler(self, request: HTTPServerRequest, **kwargs: Any) -> Any:
        accepted = list(getattr(self.options, "basic_auth", None) or [])
        if not credentials_match(request.headers.get("Authorization"), accepted):
            return self.get_handler_delegate(request, Unauthorized)
        return super().find_handler(request, **kwargs)


def require_auth_everywhere() -> None:
    """Make Flower's command build `AuthenticatedFlower` (it looks `Flower` up in its
    module when it runs). Idempotent."""
    flower.command.Flower = AuthenticatedFlower
