"""The API with Postgres down (issue 9, item 7): keys used recently still authenticate, so
`/health/dependencies` can say `postgres: false`; a key not seen recently gets the standard
503; a revoked key stops working once the key cache forgets it.

Postgres is a private cluster (`PrivatePostgres`), stopped and started for real — never the
machine's own. The key cache runs on a fake clock; `/health/dependencies` is not cached
(`HEALTH_CACHE_S=0`), so each answer is a fresh probe.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pipeline.api import create_app
from pipeline.api_keys import STALE_MAX_S, KeyCache, authenticate, create_api_key, revoke_api_key
from pipeline.db.engine import dispose_engines
from pipeline.db.migrate import upgrade
from pipeline.health import DependencyHealth
from tests.support.api import assert_error
from tests.support.clock import FakeClock
from tests.support.processes import PrivatePostgres, wait_until
from tests.support.stack import environment

TTL = 60.0


@pytest.fixture
def private_postgres(integration_env: dict[str, str]) -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        url = server.create_database("pipeline_keys")
        upgrade(url)
        with environment({"DATABASE_URL": url, "HEALTH_CACHE_S": "0"}):
            yield server
    finally:
        dispose_engines()
        server.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(private_postgres: PrivatePostgres, clock: FakeClock) -> Iterator[TestClient]:
    app = create_app(health_checks=DependencyHealth())
    app.state.key_cache = KeyCache(ttl_s=TTL, clock=clock)
    with TestClient(app) as test_client:
        yield test_client


def key_header(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def health(client: TestClient, key: str) -> dict[str, Any]:
    response = client.get("/health/dependencies", headers=key_header(key))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_health_says_postgres_is_down_while_it_is_and_up_once_it_is_back(
    client: TestClient, private_postgres: PrivatePostgres, clock: FakeClock
) -> None:
    admin, _ = create_api_key(admin=True, name="ops")
    never_used, _ = create_api_key(admin=True, name="spare")
    assert health(client, admin)["postgres"] is True

    private_postgres.stop()
    down = health(client, admin)
    assert down["postgres"] is False, "the key was seen a moment ago: answered from the cache"
    assert down["details"]["postgres"]["error"]
    assert str(private_postgres.port) not in str(down), "no database URL in the answer"

    body = assert_error(
        client.get("/health/dependencies", headers=key_header(never_used)),
        503,
        "DEPENDENCY_UNAVAILABLE",
    )
    assert "database is unreachable" in body["message"] and never_used not in body["message"]
    unknown = f"pk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    assert_error(
        client.get("/health/dependencies", headers=key_header(unknown)),
        503,
        "DEPENDENCY_UNAVAILABLE",
    )

    clock.advance(TTL * 10)
    assert health(client, admin)["postgres"] is False, (
        "past API_KEY_CACHE_S, but Postgres cannot be asked: the key still opens health"
    )
    clock.advance(STALE_MAX_S)
    assert_error(
        client.get("/health/dependencies", headers=key_header(admin)),
        503,
        "DEPENDENCY_UNAVAILABLE",
    )  # remembered for a day at most

    private_postgres.start()
    wait_until(
        lambda: client.get("/health/dependencies", headers=key_header(admin)).status_code == 200,
        timeout=15,
        interval=0.1,
        what="the key to be checked against Postgres again",
    )
    assert health(client, admin)["postgres"] is True
    assert health(client, never_used)["postgres"] is True


def test_a_revoked_key_works_until_the_cache_forgets_it_then_is_401(
    client: TestClient, clock: FakeClock
) -> None:
    key, summary = create_api_key(admin=True, name="leaver")
    assert health(client, key)["postgres"] is True
    revoke_api_key(summary.id)

    clock.advance(TTL - 1)
    assert client.get("/health/dependencies", headers=key_header(key)).status_code == 200, (
        "remembered for API_KEY_CACHE_S: the revocation is not seen yet"
    )
    clock.advance(1)
    assert_error(client.get("/health/dependencies", headers=key_header(key)), 401, "UNAUTHORIZED")


@pytest.mark.usefixtures("integration_env")
def test_the_cache_is_bounded_and_never_holds_a_key(clock: FakeClock) -> None:
    cache = KeyCache(ttl_s=TTL, max_keys=2, clock=clock)
    keys = []
    for _ in range(3):
        key, summary = create_api_key(admin=True)
        keys.append(key)
        assert authenticate(key, cache=cache) == summary
    assert len(cache) == 2, "the least recently used was forgotten"
    assert not any(key in repr(vars(cache)) for key in keys), "keyed by digest, never the key"
