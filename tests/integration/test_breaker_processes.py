"""`breaker_for`'s promises across real OS processes sharing one real Redis.

Children come from a `forkserver`, not a fork of the pytest process: forking a process that
has threads (the vendor stub, Celery's result consumer) can copy a held lock and deadlock.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
from typing import Any

import pytest
import redis
import structlog

from pipeline.breakers import BreakerFactory, DistributedCircuitBreaker
from pipeline.breakers import storage as redis_storage
from pipeline.db.breaker_events import breaker_events, record_breaker_event
from pipeline.errors import CircuitOpenError, VendorServerError
from pipeline.settings import get_settings, load_settings
from tests.support.processes import PrivateRedis, wait_until

pytestmark = pytest.mark.usefixtures("integration_env")
CTX = multiprocessing.get_context("forkserver")
CTX.set_forkserver_preload([__name__])  # children fork from a server that imported us once
T0 = 1_800_000_000.0


def make_breaker(
    tenant: int, vendor: str = "crm", *, now: float = T0, **overrides: Any
) -> DistributedCircuitBreaker:
    settings = load_settings(**overrides)
    factory = BreakerFactory(
        redis.Redis.from_url(settings.redis_url),
        settings,
        sinks=(record_breaker_event,),
        clock=lambda: now,
    )
    return factory(tenant, vendor)


def transitions(tenant: int, vendor: str = "crm") -> list[tuple[str, str]]:
    return [(e.from_state, e.to_state) for e in breaker_events(tenant, vendor)]


def failing_call() -> None:
    raise VendorServerError("503", vendor="crm")


# -- what each child process does (module level: the forkserver imports it) ---------------


def fail_n(results: Any, tenant: int, n: int) -> None:
    breaker = make_breaker(tenant)
    for _ in range(n):
        with contextlib.suppress(VendorServerError):
            breaker.call(failing_call)
    results.put(breaker.current_state)


def fail_once_together(results: Any, barrier: Any, tenant: int) -> None:
    breaker = make_breaker(tenant)
    barrier.wait(timeout=30)
    try:
        breaker.call(failing_call)
    except VendorServerError:
        results.put("failed")
    except CircuitOpenError:
        results.put("rejected")


def probe_when_half_open(results: Any, barrier: Any, tenant: int, max_calls: int, key: str) -> None:
    settings = get_settings()
    breaker = make_breaker(
        tenant, now=T0 + settings.cb_cool_off_s + 1, cb_half_open_max_calls=max_calls
    )
    client = redis.Redis.from_url(settings.redis_url)

    def slow_vendor_call() -> str:
        client.incr(key + ":entered")
        wait_until(lambda: client.exists(key), timeout=30, what="release")
        return "probed"

    barrier.wait(timeout=30)
    try:
        results.put(breaker.call(slow_vendor_call))
    except CircuitOpenError:
        results.put("rejected")


def probe_and_hang(results: Any, tenant: int, key: str) -> None:
    breaker = make_breaker(tenant, now=T0 + get_settings().cb_cool_off_s)
    client = redis.Redis.from_url(get_settings().redis_url)

    def hang() -> None:
        client.set(key, 1)
        signal.pause()  # a vendor call that never answers: hangs until the test kills us

    breaker.call(hang)


def run(target: Any, *args: Any, count: int = 1) -> tuple[list[Any], list[Any]]:
    """Start `count` children running `target(results, *args)`; return (procs, results)."""
    results = CTX.Queue()
    procs = [CTX.Process(target=target, args=(results, *args)) for _ in range(count)]
    for proc in procs:
        proc.start()
    return procs, results


def join(procs: list[Any]) -> None:
    for proc in procs:
        proc.join(timeout=30)


# -- tests --------------------------------------------------------------------------------


def test_opens_after_the_threshold_when_failures_come_from_two_processes(tenant: int) -> None:
    procs, results = run(fail_n, tenant, 2)
    assert results.get(timeout=60) == "closed"
    join(procs)
    procs, results = run(fail_n, tenant, 1)
    assert results.get(timeout=60) == "open"
    join(procs)

    with pytest.raises(CircuitOpenError):
        make_breaker(tenant).call(lambda: None)
    assert transitions(tenant) == [("closed", "open")]


def test_sixteen_processes_failing_at_once_agree_on_one_transition(tenant: int) -> None:
    barrier = CTX.Barrier(16)
    procs, results = run(fail_once_together, barrier, tenant, count=16)
    outcomes = sorted(results.get(timeout=60) for _ in procs)
    join(procs)

    assert set(outcomes) <= {"failed", "rejected"}
    assert outcomes.count("failed") >= get_settings().cb_error_threshold
    assert make_breaker(tenant).current_state == "open"
    assert transitions(tenant) == [("closed", "open")], "exactly one process trips it"


@pytest.mark.parametrize("max_calls", [1, 3])
def test_half_open_lets_exactly_the_allowed_probes_through_across_16_processes(
    tenant: int, max_calls: int
) -> None:
    settings = get_settings()
    make_breaker(tenant).open()
    key = f"{settings.redis_key_prefix}:release:{tenant}"
    client = redis.Redis.from_url(settings.redis_url)
    barrier = CTX.Barrier(16)  # held here until the children are done with it
    procs, results = run(probe_when_half_open, barrier, tenant, max_calls, key, count=16)
    try:
        # Everyone who is not a probe is refused at once, while the probes are in flight.
        early = [results.get(timeout=60) for _ in range(16 - max_calls)]
        assert early == ["rejected"] * (16 - max_calls)
        entered = lambda: int(client.get(key + ":entered") or 0)  # noqa: E731
        wait_until(lambda: entered() >= max_calls, what="the probes to reach the vendor")
        assert entered() == max_calls
    finally:
        client.set(key, 1)
    late = [results.get(timeout=60) for _ in range(max_calls)]
    join(procs)

    assert late == ["probed"] * max_calls
    assert make_breaker(tenant).current_state == "closed"
    assert transitions(tenant) == [
        ("closed", "open"),
        ("open", "half-open"),
        ("half-open", "closed"),
    ], "each transition is made, and recorded, by exactly one process"


def test_a_probe_slot_held_by_a_dead_worker_expires(tenant: int) -> None:
    settings = get_settings()
    make_breaker(tenant).open()
    key = f"{settings.redis_key_prefix}:started:{tenant}"
    client = redis.Redis.from_url(settings.redis_url)
    procs, _ = run(probe_and_hang, tenant, key)
    wait_until(lambda: client.exists(key), what="the probe to start")
    procs[0].kill()
    join(procs)

    after = T0 + settings.cb_cool_off_s
    with pytest.raises(CircuitOpenError):
        make_breaker(tenant, now=after + 1).call(lambda: None)
    fresh = make_breaker(tenant, now=after + settings.cb_probe_lease_s + 1)
    assert fresh.call(lambda: "new probe") == "new probe"


def test_unreachable_redis_behaves_as_closed_and_is_not_asked_again_at_once(tenant: int) -> None:
    class CountingConnection(redis.Connection):
        connects = 0

        def connect(self) -> None:
            CountingConnection.connects += 1
            super().connect()

    private = PrivateRedis()
    pool = redis.ConnectionPool.from_url(
        private.url, connection_class=CountingConnection, socket_connect_timeout=0.2
    )
    factory = BreakerFactory(redis.Redis(connection_pool=pool), get_settings(), sinks=())
    breaker = factory(tenant, "crm")
    private.stop()
    redis_storage._down_until.clear()

    with structlog.testing.capture_logs() as logs:
        assert breaker.call(lambda: "still served") == "still served"
        for _ in range(10):
            with pytest.raises(VendorServerError):  # the vendor's error, not Redis's
                breaker.call(failing_call)
    assert [e["event"] for e in logs].count("breaker.redis_unavailable") == 1
    assert CountingConnection.connects == 1, "a down Redis is not asked again at once"
