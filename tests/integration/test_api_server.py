"""`pipeline api` as a real uvicorn process on loopback, and `pipeline apikeys`, as an
operator and a web app meet them."""

from __future__ import annotations

import http.client
import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from pipeline.db.models import FINISHED_RUN_STATUSES
from tests.support.api_server import ApiServer, create_key
from tests.support.cli import pipeline
from tests.support.processes import wait_until
from tests.support.stack import environment


@pytest.fixture
def server(integration_env: dict[str, str], tmp_path: Path) -> Iterator[ApiServer]:
    started = ApiServer(tmp_path / "api.log")
    try:
        yield started
    finally:
        started.stop()


@pytest.mark.usefixtures("worker")
def test_a_web_app_enqueues_over_http_and_reads_the_finished_run(
    server: ApiServer, tenant: int
) -> None:
    key = create_key("--tenant", str(tenant), "--name", "web app")
    headers = {"X-API-Key": key, "X-Correlation-ID": f"http-{uuid.uuid4().hex}"}
    body = {"kind": "enrichment", "companies": [{"name": "Acme", "domain": f"acme-{tenant}.com"}]}

    response = requests.post(f"{server.url}/runs", json=body, headers=headers, timeout=10)
    assert response.status_code == 202, response.text
    assert response.headers["X-Correlation-ID"] == headers["X-Correlation-ID"]
    location = f"{server.url}{response.headers['Location']}"

    def finished() -> dict[str, Any] | None:
        run: dict[str, Any] = requests.get(location, headers=headers, timeout=10).json()
        return run if run["status"] in FINISHED_RUN_STATUSES else None

    run = wait_until(finished, timeout=60, interval=0.1, what="the run to finish")
    assert run["status"] == "succeeded" and run["items"][0]["status"] == "succeeded"

    logged = [line for line in server.log_lines() if line.get("event") == "api.request"]
    assert {"method": "POST", "path": "/runs", "status": 202}.items() <= next(
        line for line in logged if line["correlation_id"] == headers["X-Correlation-ID"]
    ).items()
    assert key not in server.log_path.read_text(), "the key is never logged"


def test_openapi_docs_are_served(server: ApiServer) -> None:
    docs = requests.get(f"{server.url}/docs", timeout=10)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    spec = requests.get(f"{server.url}/openapi.json", timeout=10).json()
    assert {"/runs", "/runs/{run_id}", "/breakers", "/health/dependencies"} <= set(spec["paths"])
    assert "X-API-Key" in json.dumps(spec["components"]["securitySchemes"])


def test_a_revoked_key_is_refused_by_the_running_server_within_the_key_cache(
    integration_env: dict[str, str], tenant: int, tmp_path: Path
) -> None:
    with environment({"API_KEY_CACHE_S": "1"}):
        server = ApiServer(tmp_path / "api.log")
    try:
        key = create_key("--tenant", str(tenant))
        assert requests.get(f"{server.url}/runs", headers={"X-API-Key": key}, timeout=10).ok

        listed = pipeline("apikeys", "list", "--tenant", str(tenant))
        assert listed.returncode == 0 and key not in listed.stdout
        (row,) = [line for line in listed.stdout.splitlines() if key[:15] in line]
        assert f"tenant {tenant}" in row and "active" in row
        revoked = pipeline("apikeys", "revoke", row.split()[0])
        assert revoked.returncode == 0, revoked.stderr

        def refused() -> dict[str, Any] | None:  # (a 401 Response is falsy: its body)
            answer = requests.get(f"{server.url}/runs", headers={"X-API-Key": key}, timeout=10)
            return answer.json() if answer.status_code == 401 else None  # type: ignore[no-any-return]

        body = wait_until(refused, timeout=15, interval=0.2, what="API_KEY_CACHE_S to pass")
        assert body["error_code"] == "UNAUTHORIZED"
        assert "revoked" in pipeline("apikeys", "list", "--tenant", str(tenant)).stdout
    finally:
        server.stop()


@pytest.mark.usefixtures("integration_env")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["apikeys", "create"], "give exactly one of --tenant or --admin"),
        (
            ["apikeys", "create", "--tenant", "7", "--admin"],
            "give exactly one of --tenant or --admin",
        ),
        (["apikeys", "create", "--tenant", "-1"], "tenant must be a positive integer"),
        (["apikeys", "revoke", "999999999"], "no API key 999999999"),
        (["api", "--port", "99999"], "port must be 1-65535"),
    ],
)
def test_bad_commands_exit_2_with_a_message(args: list[str], message: str) -> None:
    result = pipeline(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


# -- what the server does at its edges ----------------------------------------------------


def exchange(sock: socket.socket, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes; the response's status, headers and body (read to its length, or to
    the connection's close)."""
    sock.sendall(request)
    reader = sock.makefile("rb")
    status = int(reader.readline().split()[1])
    headers = {}
    while (line := reader.readline().decode("latin-1").strip()) != "":
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length")
    body = reader.read(int(length)) if length is not None else reader.read()
    return status, headers, body


def assert_error_body(body: bytes, status: int, code: str) -> dict[str, Any]:
    error: dict[str, Any] = json.loads(body)
    assert error["error"] is True and error["status_code"] == status, error
    assert error["error_code"] == code
    return error


def test_after_a_500_the_connection_serves_the_next_request_and_the_log_has_its_id(
    integration_env: dict[str, str], tmp_path: Path
) -> None:
    server = ApiServer(tmp_path / "api.log", ("tests.support.api_with_a_fault",))
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/health", headers={"X-Correlation-ID": "before-the-fault"})
        assert conn.getresponse().read() and conn.sock is not None
        sock = conn.sock
        conn.request("GET", "/fault", headers={"X-Correlation-ID": "the-fault"})
        fault = conn.getresponse()
        error = assert_error_body(fault.read(), 500, "INTERNAL_ERROR")
        assert error["correlation_id"] == "the-fault" and fault.getheader("Connection") is None
        conn.request("GET", "/health", headers={"X-Correlation-ID": "after-the-fault"})
        after = conn.getresponse()
        assert after.status == 200 and after.read() == b'{"status":"ok"}'
        assert conn.sock is sock, "the same keep-alive connection served all three"
        conn.close()

        def logged_through_the_last_request() -> list[dict[str, Any]] | None:
            """The server logs a request once its answer is sent: the line may lag it."""
            lines = server.log_lines()
            last = any(line.get("correlation_id") == "after-the-fault" for line in lines)
            return lines if last else None

        logged = wait_until(logged_through_the_last_request, timeout=10, what="the log")
        (failure,) = [line for line in logged if line.get("level") == "error"]
        assert failure["event"] == "api.unexpected_error"
        assert failure["correlation_id"] == "the-fault" and "RuntimeError" in json.dumps(failure)
        requests_logged = {
            line["correlation_id"]: line["status"]
            for line in logged
            if line.get("event") == "api.request"
        }
        assert {
            "before-the-fault": 200,
            "the-fault": 500,
            "after-the-fault": 200,
        }.items() <= requests_logged.items()
        assert "Exception in ASGI application" not in server.log_path.read_text()
    finally:
        server.stop()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /health HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
        b"GET /h\xc3\xa9alth HTTP/1.1\r\nHost: x\r\n\r\n",
        b"G(T /health HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /runs HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    ],
    ids=["bad-header", "non-ascii-target", "bad-method", "two-lengths"],
)
def test_a_request_the_server_cannot_parse_is_400_in_the_error_body(
    server: ApiServer, request_bytes: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        status, headers, body = exchange(sock, request_bytes)
    assert status == 400 and headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    error = assert_error_body(body, 400, "MALFORMED_REQUEST")
    assert headers["x-correlation-id"] == error["correlation_id"]


def test_a_body_that_does_not_arrive_in_time_is_408_and_the_connection_closed(
    integration_env: dict[str, str], tmp_path: Path
) -> None:
    with environment({"API_BODY_TIMEOUT_S": "1"}):
        server = ApiServer(tmp_path / "api.log")
    try:
        key = create_key("--admin")
        head = (
            "POST /runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"X-API-Key: {key}\r\nContent-Length: 1000\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
            started = time.monotonic()
            status, headers, body = exchange(sock, head + b'{"kind": ')
            waited = time.monotonic() - started
            assert sock.recv(1) == b"", "the server closed the connection"
        assert status == 408 and headers["connection"] == "close"
        assert assert_error_body(body, 408, "REQUEST_TIMEOUT")["details"] == {"timeout_s": 1.0}
        assert 0.9 < waited < 8, waited
    finally:
        server.stop()


def test_a_body_declared_too_big_is_413_before_it_is_sent(server: ApiServer) -> None:
    head = b"POST /runs HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        status, headers, body = exchange(sock, head)
    assert status == 413 and headers["connection"] == "close"
    assert assert_error_body(body, 413, "BODY_TOO_LARGE")["details"] == {"limit_bytes": 1_048_576}


def test_a_port_in_use_is_one_line_and_exit_3(server: ApiServer) -> None:
    """What a second `pipeline api` on the same port says: one line, before start-up."""
    second = pipeline("api", "--port", str(server.port))
    assert second.returncode == 3, second.stdout + second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"cannot listen on port {server.port}" in lines[0] and "--port" in lines[0]
    assert second.stdout == ""
    assert requests.get(f"{server.url}/health", timeout=5).status_code == 200
