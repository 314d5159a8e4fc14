"""What each operation can answer besides success, for the OpenAPI docs: every status the
server can give it, each with the one error body (`ErrorBody`).

Every operation can answer 400 (a request uvicorn cannot parse), 413 (a body over
`API_MAX_BODY_BYTES`) and 500 (a bug); each route adds what it can answer itself.
"""

from __future__ import annotations

from typing import Any

from pipeline.api.errors import ErrorBody

DESCRIPTIONS = {
    400: "malformed HTTP (`MALFORMED_REQUEST`) or a body that is not JSON (`MALFORMED_BODY`)",
    401: "no API key, or an unknown or revoked one",
    403: "a tenant key: this needs an admin key",
    404: "no such thing, or another tenant's",
    408: "the body did not arrive in full within `API_BODY_TIMEOUT_S` (`REQUEST_TIMEOUT`)",
    409: "replayed already, perhaps by a concurrent request (`ALREADY_REPLAYED`)",
    413: "a body over `API_MAX_BODY_BYTES` (`BODY_TOO_LARGE`)",
    422: "bad input; `details.errors` names each field (`INVALID_INPUT`)",
    500: "a bug (`INTERNAL_ERROR`): the traceback is in the server log, under the correlation id",
    503: "Postgres, Redis or the broker unreachable (`DEPENDENCY_UNAVAILABLE`)",
}
ANY_REQUEST = (400, 413, 500)
WITH_A_KEY = (401, 503)


def answers(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route that can also answer `statuses`."""
    return {
        status: {"model": ErrorBody, "description": DESCRIPTIONS[status]}
        for status in sorted({*ANY_REQUEST, *statuses})
    }


def keyed(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`answers` for a route that needs an API key (so 401, and 503 when Postgres cannot
    say whether the key is valid)."""
    return answers(*WITH_A_KEY, *statuses)
