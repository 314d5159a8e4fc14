"""Real parts for integration tests: a throw-away Postgres database migrated by Alembic,
a Redis database of their own, a real Celery worker (prefork), and a vendor on loopback.

A missing service is a loud error, never a skip.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
import redis

from pipeline.simulator import Simulator
from tests.support.processes import Worker
from tests.support.vendor_stub import VendorStub

PG_ADMIN_DSN = "dbname=postgres user=postgres host=127.0.0.1 port=5432"
TEST_REDIS_DB = 12


def _admin(sql: str) -> None:
    conn = psycopg2.connect(PG_ADMIN_DSN)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


@pytest.fixture(scope="session")
def simulator() -> Iterator[Simulator]:
    """The vendor simulator on loopback, shared by the session (tests reset what they touch)."""
    with Simulator(port=0, seed=7) as sim:
        yield sim


@pytest.fixture(scope="session")
def integration_env(simulator: Simulator) -> Iterator[dict[str, str]]:
    from pipeline.breakers import configure_breakers
    from pipeline.db.engine import dispose_engines
    from pipeline.db.migrate import upgrade
    from pipeline.settings import get_settings

    redis_url = f"redis://127.0.0.1:6379/{TEST_REDIS_DB}"
    test_redis = redis.Redis.from_url(redis_url)
    test_redis.ping()  # loud failure if Redis is down: run `make services`
    test_redis.flushdb()

    db_name = f"pipeline_test_{uuid.uuid4().hex[:10]}"
    _admin(f"CREATE DATABASE {db_name}")
    database_url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{db_name}"
    upgrade(database_url)

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
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    get_settings.cache_clear()
    configure_breakers(None)
    _point_celery_app_at(get_settings())
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()
        configure_breakers(None)
        dispose_engines()
        _admin(f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")
        test_redis.flushdb()


def _point_celery_app_at(settings: Any) -> None:
    """The app object `enqueue_*` sends through may have been built at import time, from
    the settings before ours; give it the test broker and backend."""
    from workers.app import app, celery_config

    app.conf.update(celery_config(settings))


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
def tenant() -> int:
    """A tenant id no other test uses, so breaker state never leaks between tests."""
    return random.randint(10**9, 2 * 10**9)
