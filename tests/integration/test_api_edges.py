"""What the app alone decides at its edges, through FastAPI's TestClient on the real app
(real Postgres and Redis): strings Postgres cannot store, integers out of range, no bool
for an integer, bodies that are not JSON or too big, one error body for every status, no
value echoed, and every status documented. (What depends on the server — connections,
slow bodies, malformed HTTP — is in test_api_server.py.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.api import assert_error, enrich
from tests.support.api_with_a_fault import app_with_a_fault
from tests.support.stack import environment

HOSTILE = "<img src=x onerror=alert(1)>"
BIG = 2**63  # one past BIGINT


@pytest.mark.parametrize("field", ["name", "domain"])
def test_a_nul_in_a_company_is_422_naming_the_field(
    api: Any, tenant_headers: dict[str, str], field: str
) -> None:
    company = {"name": "Acme", "domain": "acme.com", field: "acme\x00.com"}
    error = assert_error(enrich(api, tenant_headers, [company]), 422, "INVALID_INPUT")
    (named,) = error["details"]["errors"]
    assert named["field"] == f"body.enrichment.companies.0.{field}"
    assert "NUL" in named["message"]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (f"/dead-letters?offset={BIG}", "query.offset"),
        (f"/dead-letters?tenant={BIG}", "query.tenant"),
        (f"/dead-letters/{BIG}", "path.entry_id"),
        (f"/dead-letters/{BIG}/replay", "path.entry_id"),
        (f"/runs?tenant={BIG}", "query.tenant"),
        (f"/breakers?tenant={BIG}", "query.tenant"),
        (f"/breakers/{BIG}/crm/reset", "path.tenant"),
    ],
)
def test_integers_out_of_range_are_422(
    api: Any, admin_headers: dict[str, str], path: str, field: str
) -> None:
    method = "POST" if path.endswith(("replay", "reset")) else "GET"
    error = assert_error(api.request(method, path, headers=admin_headers), 422, "INVALID_INPUT")
    assert [e["field"] for e in error["details"]["errors"]] == [field]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "enrichment", "tenant": True, "companies": [1]}, "body.enrichment.tenant"),
        ({"kind": "enrichment", "tenant": 1.0, "companies": [1]}, "body.enrichment.tenant"),
        ({"kind": "enrichment", "tenant": "7", "companies": [1]}, "body.enrichment.tenant"),
        (
            {"kind": "enrichment", "tenant": 7, "companies": [{"id": True}]},
            "body.enrichment.companies.0.id",
        ),
        ({"kind": "enrichment", "tenant": 7, "companies": [BIG]}, "body.enrichment.companies.0.id"),
        (
            {
                "kind": "enrichment",
                "tenant": 7,
                "companies": [1],
                "options": {"enable_lusha_fallback": 1},
            },
            "body.enrichment.options.enable_lusha_fallback",
        ),
    ],
    ids=["bool-tenant", "float-tenant", "string-tenant", "bool-id", "big-id", "int-flag"],
)
def test_no_value_of_another_type_is_taken_for_an_integer_or_a_flag(
    api: Any, admin_headers: dict[str, str], body: dict[str, Any], field: str
) -> None:
    response = api.post("/runs", json=body, headers=admin_headers)
    error = assert_error(response, 422, "INVALID_INPUT")
    assert field in [e["field"] for e in error["details"]["errors"]]


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe{not utf-8", b'{"kind": "enrichment",', b"[" * 5000 + b"]" * 5000],
    ids=["not-utf-8", "not-json", "too-deep"],
)
def test_a_body_that_is_not_json_is_400_malformed_body(
    api: Any, tenant_headers: dict[str, str], content: bytes
) -> None:
    headers = {**tenant_headers, "Content-Type": "application/json"}
    error = assert_error(api.post("/runs", content=content, headers=headers), 400, "MALFORMED_BODY")
    assert error["details"]["errors"][0]["field"] == "body"


def test_a_method_not_allowed_says_which_are(api: Any, tenant_headers: dict[str, str]) -> None:
    response = api.delete("/runs", headers=tenant_headers)
    error = assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert response.headers["Allow"] == "GET, POST"
    assert error["details"]["allowed_methods"] == ["GET", "POST"]


def test_a_trailing_slash_is_a_plain_404_not_a_redirect(
    api: Any, tenant_headers: dict[str, str]
) -> None:
    """A redirect would build its Location from the client's Host header, and is a status
    OpenAPI does not list: an unknown path is an unknown path."""
    response = api.get("/runs/", headers=tenant_headers, follow_redirects=False)
    assert_error(response, 404, "NOT_FOUND")
    assert "location" not in response.headers


def test_no_value_sent_comes_back_in_an_error(
    api: Any, tenant_headers: dict[str, str], tenant: int
) -> None:
    long_vendor = "v" * 10_000
    answers = [
        enrich(api, tenant_headers, [{"domain": HOSTILE}]),
        enrich(api, tenant_headers, [{"name": HOSTILE * 20}]),
        api.post("/runs", json={"kind": HOSTILE, "companies": [1]}, headers=tenant_headers),
        enrich(api, tenant_headers, [{"name": "Acme"}], **{HOSTILE: 1}),
        api.post("/runs", json={"kind": "export", "run_id": HOSTILE}, headers=tenant_headers),
        api.get(f"/runs/{HOSTILE}", headers=tenant_headers),
        api.get("/runs", params={"cursor": HOSTILE, "status": HOSTILE}, headers=tenant_headers),
        api.post(f"/breakers/{tenant}/{HOSTILE}/reset", headers=tenant_headers),
        api.post(f"/breakers/{tenant}/{long_vendor}/reset", headers=tenant_headers),
        api.post(f"/breakers/{tenant}/nosuchvendor/reset", headers=tenant_headers),
        api.get("/dead-letters", params={"status": HOSTILE}, headers=tenant_headers),
    ]
    for response in answers:
        assert 400 <= response.status_code < 500, response.text
        assert "<img" not in response.text and "v" * 100 not in response.text, response.text
        assert "nosuchvendor" not in response.text
        assert response.json()["details"]["errors" if response.status_code == 422 else "field"]


def test_a_body_over_the_limit_is_413_before_it_is_read(
    integration_env: dict[str, str], tenant_headers: dict[str, str]
) -> None:
    with environment({"API_MAX_BODY_BYTES": "1000"}), TestClient(app_with_a_fault()) as client:
        body = {"kind": "enrichment", "companies": [{"name": "x" * 200}] * 10}
        response = client.post("/runs", json=body, headers=tenant_headers)
        error = assert_error(response, 413, "BODY_TOO_LARGE")
        assert error["details"] == {"limit_bytes": 1000}
        assert response.headers["Connection"] == "close"
        small = client.post("/runs", json={"kind": "enrichment"}, headers=tenant_headers)
        assert small.status_code == 422


def test_a_bug_is_answered_500_in_the_error_body_and_not_raised_on(
    integration_env: dict[str, str],
) -> None:
    """Raised on, the error would reach uvicorn, which drops the connection (and this
    client, which re-raises server errors, would raise)."""
    with TestClient(app_with_a_fault(), raise_server_exceptions=True) as client:
        response = client.get("/fault", headers={"X-Correlation-ID": "fault-1"})
    error = assert_error(response, 500, "INTERNAL_ERROR")
    assert error["correlation_id"] == response.headers["X-Correlation-ID"] == "fault-1"
    assert "a bug" not in response.text and "Traceback" not in response.text


@pytest.fixture(scope="module")
def spec(api: Any) -> Iterator[dict[str, Any]]:
    yield api.get("/openapi.json").json()


def responses_of(spec: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    return spec["paths"][path][method]["responses"]  # type: ignore[no-any-return]


def test_every_operation_documents_every_status_it_can_answer(spec: dict[str, Any]) -> None:
    expected = {
        ("/runs", "post"): {"202", "400", "401", "404", "408", "413", "422", "500", "503"},
        ("/runs", "get"): {"200", "400", "401", "404", "413", "422", "500", "503"},
        ("/dead-letters/{entry_id}/replay", "post"): {"409"},
        ("/metrics", "get"): {"200", "400", "401", "403", "413", "500", "503"},
        ("/health/dependencies", "get"): {"200", "400", "401", "403", "413", "500", "503"},
        ("/health", "get"): {"200", "400", "413", "500"},
    }
    for (path, method), statuses in expected.items():
        assert statuses <= set(responses_of(spec, path, method)), (path, method)
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, method)
    body = spec["paths"]["/runs"]["post"]["requestBody"]["content"]["application/json"]
    assert json.dumps(body["schema"]).count("#/components/schemas/") >= 3
    company = spec["components"]["schemas"]["CompanyEntry"]["properties"]["name"]["anyOf"][0]
    assert company["pattern"] == "^[^\\x00]*$" and company["maxLength"] == 255
