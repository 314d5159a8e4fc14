"""The bulkhead caps calls in flight to a vendor across processes, and heals itself."""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest
import redis

from pipeline.errors import BulkheadFullError
from pipeline.resilience.bulkhead import Bulkhead
from pipeline.settings import get_settings
from tests.support.clock import FakeClock
from tests.support.processes import wait_until

pytestmark = pytest.mark.usefixtures("integration_env")
CTX = multiprocessing.get_context("forkserver")


def bulkhead(limit: int, *, clock: Any = None, wait_s: float = 0.0, prefix: str = "") -> Bulkhead:
    settings = get_settings()
    return Bulkhead(
        redis.Redis.from_url(settings.redis_url),
        prefix=prefix or settings.redis_key_prefix,
        limit_for=lambda vendor: limit,
        wait_s=wait_s,
        slot_ttl_s=10.0,
        clock=clock or FakeClock(),
        sleep=lambda s: None,
    )


def hold_a_slot(results: Any, prefix: str, vendor: str, release_key: str) -> None:
    client = redis.Redis.from_url(get_settings().redis_url)
    guard = bulkhead(2, prefix=prefix, clock=lambda: 1_800_000_000.0)
    try:
        with guard.slot(vendor):
            results.put("held")
            wait_until(lambda: client.exists(release_key), timeout=30, what="release")
    except BulkheadFullError:
        results.put("full")


def test_at_most_limit_calls_in_flight_across_processes(tenant: int) -> None:
    prefix = f"{get_settings().redis_key_prefix}-bh-{tenant}"
    release_key = f"{prefix}:release"
    results = CTX.Queue()
    procs = [
        CTX.Process(target=hold_a_slot, args=(results, prefix, "crawler", release_key))
        for _ in range(5)
    ]
    for proc in procs:
        proc.start()
    outcomes = sorted(results.get(timeout=60) for _ in procs)
    redis.Redis.from_url(get_settings().redis_url).set(release_key, 1)
    for proc in procs:
        proc.join(timeout=30)
    assert outcomes == ["full", "full", "full", "held", "held"]


def test_a_full_bulkhead_waits_then_gives_up_and_other_vendors_are_unaffected(
    tenant: int,
) -> None:
    clock = FakeClock()
    waited: list[float] = []
    guard = bulkhead(1, clock=clock, wait_s=0.5, prefix=f"bh-{tenant}")
    guard._sleep = lambda s: (waited.append(s), clock.advance(s))  # type: ignore[assignment]
    with guard.slot("crm"):
        with pytest.raises(BulkheadFullError), guard.slot("crm"):
            pass
        assert sum(waited) >= 0.5
        with guard.slot("lusha"):
            assert guard.in_flight("lusha") == 1
    assert guard.in_flight("crm") == 0


def test_a_dead_workers_slot_expires(tenant: int) -> None:
    clock = FakeClock()
    guard = bulkhead(1, clock=clock, prefix=f"bh-dead-{tenant}")
    guard._take("crm", "slot-of-a-killed-worker")  # taken and never given back
    with pytest.raises(BulkheadFullError), guard.slot("crm"):
        pass
    clock.advance(10.5)
    with guard.slot("crm"):
        assert guard.in_flight("crm") == 1
