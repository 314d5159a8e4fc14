"""The request a fake vendor sees (`Call`) and what it gives back (`Answer`).

Fake vendors are plain functions `Call -> Answer`, free of HTTP plumbing, so each can be
read as the vendor's contract. A vendor refuses a request by raising `Refusal`, which the
server turns into a JSON error answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from pipeline.simulator.faults import Fault


class Refusal(Exception):
    """A vendor's deliberate non-2xx answer: `{"error": error, "message": message}`."""

    def __init__(self, status: int, error: str, message: str = "") -> None:
        super().__init__(f"{status} {error}: {message}")
        self.status = status
        self.error = error
        self.message = message

    def answer(self) -> Answer:
        body: dict[str, Any] = {"error": self.error}
        if self.message:
            body["message"] = self.message
        return Answer.json(body, status=self.status)


@dataclass(frozen=True)
class Call:
    """One vendor request, with the tenant it came from and the fault that shapes it."""

    tenant: int
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""
    fault: Fault | None = None

    def header(self, name: str) -> str:
        """A header's value ('' when absent); names are matched case-insensitively."""
        return self.headers.get(name.lower(), "")

    def bearer(self) -> str:
        """The token of `Authorization: Bearer <token>`, or ''."""
        scheme, _, token = self.header("Authorization").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""

    def json(self) -> dict[str, Any]:
        """The body as a JSON object; a body that is not one is a 400."""
        try:
            data = json.loads(self.body or b"{}")
        except ValueError as exc:
            raise Refusal(400, "bad_request", f"body is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise Refusal(400, "bad_request", "body must be a JSON object")
        return data

    def form_or_json(self) -> dict[str, Any]:
        """An OAuth-style body: form-encoded, or JSON when the content type says so."""
        if "json" in self.header("Content-Type"):
            return self.json()
        pairs = parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)
        return {key: values[-1] for key, values in pairs.items()}


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, bytes and headers."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Answer:
        return cls(status=status, body=json.dumps(data).encode(), headers=headers or {})

    @classmethod
    def empty(cls, status: int = 204) -> Answer:
        return cls(status=status)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300
