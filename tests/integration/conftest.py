"""Real parts for integration tests: a throw-away Postgres database migrated by Alembic,
a Redis database of their own, a real Celery worker (prefork), and a vendor on loopback.

A missing service is a loud error, never a skip.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.fernet import Fernet

from pipeline.simulator import Simulator
from tests.support.processes import PrivateRedis, Worker
from tests.support.stack import environment, flushed_redis, own_redis_url, throwaway_database
from tests.support.vendor_stub import VendorStub


@pytest.fixture(scope="session")
def simulator() -> Iterator[Simulator]:
    """The vendor simulator on loopback, shared by the session (tests reset what they touch)."""
    with Simulator(port=0, seed=7) as sim:
        yield sim


@pytest.fixture(scope="session")
def integration_env(simulator: Simulator) -> Iterator[dict[str, str]]:
    """Settings for a throw-away database, our own Redis db and key prefix, the simulator;
    this process (enqueue, breakers, the Celery app) follows them too."""
    redis_url = own_redis_url()
    with flushed_redis(redis_url), throwaway_database() as database_url:
        env = {
            "DATABASE_URL": database_url,
            "BROKER_URL": redis_url,
            "RESULT_BACKEND": redis_url,
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": f"test-{uuid.uuid4().hex[:8]}",
            "RETRY_JITTER_SEED": "20261123",
            "LOG_JSON": "true",
            "VENDOR_BASE_URL": simulator.url,
            "HTTP_READ_TIMEOUT_S": "1",
            "PIPELINE_SECRET_KEY": Fernet.generate_key().decode(),
        }
        with environment(env):
            yield env


@pytest.fixture(scope="session")
def celery_app(integration_env: dict[str, str]) -> Any:
    """A client app built from the test settings (any app made at import time is not)."""
    from workers.app import create_app

    return create_app()


@pytest.fixture(scope="session")
def worker(
    integration_env: dict[str, str], celery_app: Any, tmp_path_factory: Any
) -> Iterator[Worker]:
    proc = Worker(integration_env, tmp_path_factory.mktemp("worker") / "worker.log")
    try:
        proc.wait_ready(celery_app)
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def stub() -> Iterator[VendorStub]:
    server = VendorStub()
    yield server
    server.close()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server of the test's own, to stop and start (never the machine's)."""
    server = PrivateRedis()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tenant() -> int:
    """A tenant id no other test uses, so breaker state never leaks between tests."""
    return random.randint(10**9, 2 * 10**9)


@pytest.fixture(scope="session")
def api(integration_env: dict[str, str]) -> Iterator[Any]:
    """The real web API application (real Redis, Postgres, broker) behind FastAPI's
    TestClient; tests needing a real HTTP server start `pipeline api` themselves."""
    from fastapi.testclient import TestClient

    from pipeline.api import create_app

    with TestClient(create_app()) as client:
        yield client


@pytest.fixture(scope="session")
def admin_headers(integration_env: dict[str, str]) -> dict[str, str]:
    from pipeline.api_keys import create_api_key

    key, _ = create_api_key(admin=True, name="tests")
    return {"X-API-Key": key}


@pytest.fixture
def tenant_headers(integration_env: dict[str, str], tenant: int) -> dict[str, str]:
    """A key for the test's own tenant."""
    from pipeline.api_keys import create_api_key

    key, _ = create_api_key(tenant_id=tenant)
    return {"X-API-Key": key}
