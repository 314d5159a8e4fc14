"""`/health` and `/health/dependencies`: real probes; Redis stopped and started for real (a
private redis-server, never the shared one); the cache on an injected clock."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pipeline.api import create_app
from pipeline.health import DependencyHealth
from pipeline.vendors.registry import GUARDED_VENDORS
from tests.support.api import assert_error
from tests.support.breakers import trip
from tests.support.clock import FakeClock
from tests.support.processes import PrivateRedis, wait_until
from tests.support.stack import environment


def test_liveness_needs_no_key(api: Any) -> None:
    response = api.get("/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_dependencies_need_an_admin_key(api: Any, tenant_headers: dict[str, str]) -> None:
    assert_error(api.get("/health/dependencies"), 401, "UNAUTHORIZED")
    assert_error(api.get("/health/dependencies", headers=tenant_headers), 403, "FORBIDDEN")


@pytest.mark.usefixtures("worker")
def test_everything_up_with_a_live_worker_and_vendors_from_breakers(
    admin_headers: dict[str, str], tenant: int
) -> None:
    trip(tenant, "lusha")  # the only stored lusha breaker of this fresh tenant... and others'
    with TestClient(create_app(health_checks=DependencyHealth(clock=FakeClock()))) as client:
        report = client.get("/health/dependencies", headers=admin_headers).json()

    assert {k: report[k] for k in ("redis", "postgres", "broker", "workers")} == dict.fromkeys(
        ("redis", "postgres", "broker", "workers"), True
    )
    assert set(report["vendors"]) == set(GUARDED_VENDORS)
    assert report["details"]["workers"]["live"], "the test worker answered the ping"
    lusha = report["details"]["vendors"]["breakers"]["lusha"]
    assert lusha["open"] >= 1
    healthy = (lusha["open"] + lusha["half_open"]) / lusha["stored"] < 0.5
    assert report["vendors"]["lusha"] is healthy


def test_redis_going_away_and_coming_back_is_seen_through_the_cache(
    integration_env: dict[str, str], admin_headers: dict[str, str], private_redis: PrivateRedis
) -> None:
    clock = FakeClock()
    checks = DependencyHealth(clock=clock)
    with (
        environment({"REDIS_URL": private_redis.url, "HEALTH_CACHE_S": "5"}),
        TestClient(create_app(health_checks=checks)) as client,
    ):

        def report() -> dict[str, Any]:
            started = time.monotonic()
            response = client.get("/health/dependencies", headers=admin_headers)
            assert response.status_code == 200
            assert time.monotonic() - started < 3, "a dead dependency must not hang the check"
            return response.json()  # type: ignore[no-any-return]

        assert report()["redis"] is True
        private_redis.stop()
        assert report()["redis"] is True, "within HEALTH_CACHE_S the cached answer stands"

        clock.advance(5)
        down = report()
        assert down["redis"] is False
        assert down["details"]["redis"]["error"]
        assert set(down["vendors"].values()) == {None}, "breakers unreadable: unknown"
        assert down["postgres"] is True and down["broker"] is True
        assert private_redis.url.split("//")[1] not in str(down), "no URL in the answer"

        private_redis.start()

        def back() -> bool:
            clock.advance(5)
            return bool(report()["redis"])

        wait_until(back, timeout=15, interval=0.1, what="redis to be seen again")
        assert all(value is True for value in report()["vendors"].values())
