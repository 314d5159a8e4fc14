"""`pipeline api` as a real uvicorn process on loopback, and `pipeline apikeys`, as an
operator and a web app meet them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.test_cli import pipeline
from tests.support.processes import REPO, free_port, wait_until
from tests.support.stack import environment


class ApiServer:
    def __init__(self, log_path: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 (closed in stop())
        port = self.url.rsplit(":", 1)[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "api", "--host", "127.0.0.1", "--port", port],
            cwd=REPO,
            env=dict(os.environ),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._answers, timeout=30, what="pipeline api to answer")

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"pipeline api exited:\n{self.log_path.read_text()[-3000:]}")
        try:
            return requests.get(f"{self.url}/health", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def log_lines(self) -> list[dict[str, Any]]:
        self._log.flush()
        lines = []
        for line in self.log_path.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._log.close()


@pytest.fixture
def server(integration_env: dict[str, str], tmp_path: Path) -> Iterator[ApiServer]:
    started = ApiServer(tmp_path / "api.log")
    try:
        yield started
    finally:
        started.stop()


def create_key(*args: str) -> str:
    result = pipeline("apikeys", "create", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()[0]


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
        return run if run["status"] in ("succeeded", "degraded", "failed") else None

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
