"""The API as a client meets it: the standard error body, runs enqueued and waited for."""

from __future__ import annotations

from typing import Any

from pipeline.db.models import FINISHED_RUN_STATUSES
from tests.support.processes import wait_until

DONE = set(FINISHED_RUN_STATUSES)


ERROR_KEYS = {
    "error",
    "status_code",
    "message",
    "details",
    "error_code",
    "correlation_id",
    "timestamp",
}


def finished_run(api: Any, headers: dict[str, str], run_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = api.get(f"/runs/{run_id}", headers=headers).json()
        return body if body["status"] in DONE else None

    return wait_until(done, timeout=60, interval=0.1, what=f"run {run_id} to finish")  # type: ignore[no-any-return]


def enrich(api: Any, headers: dict[str, str], companies: list[Any], **extra: Any) -> Any:
    return api.post(
        "/runs", json={"kind": "enrichment", "companies": companies, **extra}, headers=headers
    )


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert response.status_code == status, body
    assert set(body) == ERROR_KEYS and body["error"] is True
    assert (body["status_code"], body["error_code"]) == (status, code)
    assert body["correlation_id"] == response.headers["X-Correlation-ID"]
    assert "Traceback" not in response.text
    return body
