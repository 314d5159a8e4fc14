"""`breaker_for`'s promises, checked across real OS processes sharing one real Redis."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import structlog

from pipeline.breakers import BreakerFactory, DistributedCircuitBreaker, breaker_for
from pipeline.db.breaker_events import breaker_events, record_breaker_event
from pipeline.errors import (
    CircuitOpenError,
    VendorAuthError,
    VendorClientError,
    VendorRateLimitError,
    VendorServerError,
)
from pipeline.settings import get_settings, load_settings
from tests.support.processes import PrivateRedis, wait_until

pytestmark = pytest.mark.usefixtures("integration_env")
CTX = multiprocessing.get_context("fork")
T0 = 1_800_000_000.0  # an injected "now"; cool-off is measured against it, never slept


def make_breaker(
    tenant: int,
    vendor: str,
    *,
    now: float = T0,
    client: redis.Redis | None = None,
    **overrides: Any,
) -> DistributedCircuitBreaker:
    settings = load_settings(**overrides)
    client = client or redis.Redis.from_url(settings.redis_url)
    factory = BreakerFactory(client, settings, sinks=(record_breaker_event,), clock=lambda: now)
    return factory(tenant, vendor)


def fail(exc_type: type[Exception] = VendorServerError) -> Callable[[], None]:
    def call() -> None:
        raise exc_type("vendor said no", vendor="v")

    return call


def in_process(target: Callable[..., Any], *args: Any) -> Any:
    """Run `target(*args)` in a fresh OS process and return its result."""
    results = CTX.Queue()

    def child() -> None:
        from pipeline.db.engine import dispose_engines

        dispose_engines()
        results.put(target(*args))

    proc = CTX.Process(target=child)
    proc.start()
    result = results.get(timeout=30)
    proc.join(timeout=10)
    return result


def _fail_n(tenant: int, vendor: str, n: int) -> str:
    breaker = make_breaker(tenant, vendor)
    for _ in range(n):
        with pytest.raises(VendorServerError):
            breaker.call(fail())
    return breaker.current_state


def transitions(tenant: int, vendor: str) -> list[tuple[str, str]]:
    return [(e.from_state, e.to_state) for e in breaker_events(tenant, vendor)]


def test_opens_after_threshold_when_failures_come_from_two_processes(tenant: int) -> None:
    assert in_process(_fail_n, tenant, "crm", 2) == "closed"
    assert in_process(_fail_n, tenant, "crm", 1) == "open"

    calls: list[int] = []
    with pytest.raises(CircuitOpenError):
        make_breaker(tenant, "crm").call(lambda: calls.append(1))
    assert calls == [], "an open breaker must not call the vendor"
    assert transitions(tenant, "crm") == [("closed", "open")]


def _fail_once_together(tenant: int, barrier: Any) -> str:
    breaker = make_breaker(tenant, "crawler")
    barrier.wait(timeout=20)
    try:
        breaker.call(fail())
    except VendorServerError:
        return "failed"
    except CircuitOpenError:
        return "rejected"
    return "ok"


def test_sixteen_processes_failing_at_once_agree_on_one_transition(tenant: int) -> None:
    barrier = CTX.Barrier(16)
    results = CTX.Queue()

    def child() -> None:
        from pipeline.db.engine import dispose_engines

        dispose_engines()
        results.put(_fail_once_together(tenant, barrier))

    procs = [CTX.Process(target=child) for _ in range(16)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=30) for _ in procs]
    for proc in procs:
        proc.join(timeout=10)

    assert len(outcomes) == 16
    assert make_breaker(tenant, "crawler").current_state == "open"
    assert transitions(tenant, "crawler") == [("closed", "open")], "exactly one process trips it"


@pytest.mark.parametrize(
    "error", [VendorRateLimitError, VendorClientError, VendorAuthError], ids=["429", "4xx", "401"]
)
def test_rate_limits_and_client_errors_never_open_it(tenant: int, error: type[Exception]) -> None:
    breaker = make_breaker(tenant, "search")
    for _ in range(10):
        with pytest.raises(error):
            breaker.call(fail(error))
    assert breaker.current_state == "closed"
    assert breaker.fail_counter == 0


def test_neutral_errors_do_not_end_a_failure_streak(tenant: int) -> None:
    breaker = make_breaker(tenant, "search")
    for error in (VendorServerError, VendorRateLimitError, VendorServerError, VendorClientError):
        with pytest.raises(error):
            breaker.call(fail(error))
    assert breaker.fail_counter == 2
    assert breaker.call(lambda: "ok") == "ok"
    assert breaker.fail_counter == 0, "a success ends the streak"


def test_exempt_vendors_never_open(tenant: int) -> None:
    breaker = make_breaker(tenant, "zerobounce", cb_global_exempt_vendors="zerobounce,crm")
    for _ in range(20):
        with pytest.raises(VendorServerError):
            breaker.call(fail())
    assert breaker.current_state == "closed"


def test_per_vendor_override_changes_the_threshold(tenant: int) -> None:
    overrides = {"cb_vendor_overrides": {"crm": {"error_threshold": 5}}}
    crm, crawler = (
        make_breaker(tenant, "crm", **overrides),
        make_breaker(tenant, "crawler", **overrides),
    )
    for _ in range(4):
        for breaker in (crm, crawler):
            with pytest.raises((VendorServerError, CircuitOpenError)):
                breaker.call(fail())
    assert crawler.current_state == "open"
    assert crm.current_state == "closed"


def test_one_tenants_failures_never_open_another_tenants_breaker(tenant: int) -> None:
    other = tenant + 1
    in_process(_fail_n, tenant, "apify_linkedin", 3)
    assert make_breaker(tenant, "apify_linkedin").current_state == "open"
    neighbour = make_breaker(other, "apify_linkedin")
    assert neighbour.current_state == "closed"
    assert neighbour.call(lambda: "served") == "served"


def test_cool_off_is_measured_with_the_injected_clock(tenant: int) -> None:
    make_breaker(tenant, "lusha", now=T0).open()
    cool_off = get_settings().cb_cool_off_s
    with pytest.raises(CircuitOpenError) as rejected:
        make_breaker(tenant, "lusha", now=T0 + cool_off - 0.5).call(lambda: "early")
    assert rejected.value.details["retry_in_s"] == pytest.approx(0.5)
    assert make_breaker(tenant, "lusha", now=T0 + cool_off).call(lambda: "probe") == "probe"
    assert transitions(tenant, "lusha") == [
        ("closed", "open"),
        ("open", "half-open"),
        ("half-open", "closed"),
    ]


def test_failed_probe_reopens_and_closing_needs_the_success_threshold(tenant: int) -> None:
    opts = {"cb_success_threshold": 2}
    make_breaker(tenant, "crm", now=T0, **opts).open()
    later = T0 + get_settings().cb_cool_off_s
    with pytest.raises(VendorServerError):
        make_breaker(tenant, "crm", now=later, **opts).call(fail())
    assert make_breaker(tenant, "crm", now=later, **opts).current_state == "open"
    with pytest.raises(CircuitOpenError):  # re-opened at `later`: a fresh cool-off
        make_breaker(tenant, "crm", now=later + 1, **opts).call(lambda: None)

    again = later + get_settings().cb_cool_off_s
    breaker = make_breaker(tenant, "crm", now=again, **opts)
    breaker.call(lambda: None)
    assert breaker.current_state == "half-open"
    assert breaker.success_counter == 1
    breaker.call(lambda: None)
    assert breaker.current_state == "closed"


def _probe_when_half_open(tenant: int, max_calls: int, barrier: Any, release_key: str) -> str:
    settings = get_settings()
    breaker = make_breaker(
        tenant, "crm", now=T0 + settings.cb_cool_off_s + 1, cb_half_open_max_calls=max_calls
    )
    client = redis.Redis.from_url(settings.redis_url)

    def slow_vendor_call() -> str:
        client.incr(release_key + ":entered")
        wait_until(lambda: client.exists(release_key), timeout=20, what="release")
        return "probed"

    barrier.wait(timeout=20)
    try:
        return breaker.call(slow_vendor_call)
    except CircuitOpenError:
        return "rejected"


@pytest.mark.parametrize("max_calls", [1, 3])
def test_half_open_lets_exactly_the_allowed_probes_through_across_16_processes(
    tenant: int, max_calls: int
) -> None:
    settings = get_settings()
    make_breaker(tenant, "crm", now=T0).open()
    release_key = f"{settings.redis_key_prefix}:release:{tenant}"
    client = redis.Redis.from_url(settings.redis_url)
    barrier, results = CTX.Barrier(16), CTX.Queue()

    def child() -> None:
        from pipeline.db.engine import dispose_engines

        dispose_engines()
        results.put(_probe_when_half_open(tenant, max_calls, barrier, release_key))

    procs = [CTX.Process(target=child) for _ in range(16)]
    for proc in procs:
        proc.start()
    try:
        # Every caller that is not a probe is refused at once, while the probes are in flight.
        early = [results.get(timeout=30) for _ in range(16 - max_calls)]
        assert early == ["rejected"] * (16 - max_calls)
        entered = lambda: int(client.get(release_key + ":entered") or 0)  # noqa: E731
        wait_until(lambda: entered() >= max_calls, what="the probes to reach the vendor")
        assert entered() == max_calls
    finally:
        client.set(release_key, 1)
    late = [results.get(timeout=30) for _ in range(max_calls)]
    for proc in procs:
        proc.join(timeout=10)

    assert late == ["probed"] * max_calls
    assert make_breaker(tenant, "crm").current_state == "closed"
    assert transitions(tenant, "crm") == [
        ("closed", "open"),
        ("open", "half-open"),
        ("half-open", "closed"),
    ], "each transition is made, and recorded, by exactly one process"


def _probe_and_die(tenant: int, started_key: str) -> None:
    breaker = make_breaker(tenant, "crm", now=T0 + get_settings().cb_cool_off_s)
    client = redis.Redis.from_url(get_settings().redis_url)

    def hang() -> None:
        client.set(started_key, 1)
        time.sleep(60)  # killed long before this ends

    breaker.call(hang)


def test_a_probe_slot_held_by_a_dead_worker_expires(tenant: int) -> None:
    settings = get_settings()
    make_breaker(tenant, "crm", now=T0).open()
    started_key = f"{settings.redis_key_prefix}:started:{tenant}"
    client = redis.Redis.from_url(settings.redis_url)
    proc = CTX.Process(target=_probe_and_die, args=(tenant, started_key))
    proc.start()
    wait_until(lambda: client.exists(started_key), what="probe to start")
    proc.kill()
    proc.join(timeout=10)

    after = T0 + settings.cb_cool_off_s
    with pytest.raises(CircuitOpenError):
        make_breaker(tenant, "crm", now=after + 1).call(lambda: None)
    lease = settings.cb_probe_lease_s
    assert (
        make_breaker(tenant, "crm", now=after + lease + 1).call(lambda: "new probe") == "new probe"
    )


class CountingConnection(redis.Connection):
    """Counts requests sent to Redis: each one is a network round trip."""

    sent = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        super().send_packed_command(command, check_health)


def test_successful_closed_call_costs_one_redis_round_trip(tenant: int) -> None:
    pool = redis.ConnectionPool.from_url(
        get_settings().redis_url, connection_class=CountingConnection
    )
    breaker = make_breaker(tenant, "crm", client=redis.Redis(connection_pool=pool))
    breaker.call(lambda: None)  # first call may load the scripts

    CountingConnection.sent = 0
    for _ in range(100):
        breaker.call(lambda: None)
    assert CountingConnection.sent == 100

    with pytest.raises(VendorServerError):
        breaker.call(fail())
    CountingConnection.sent = 0
    breaker.call(lambda: None)
    assert CountingConnection.sent == 2, "ending a failure streak costs one more write"


def test_unreachable_redis_behaves_as_closed_and_says_so(tenant: int) -> None:
    private = PrivateRedis()
    client = redis.Redis.from_url(private.url, socket_timeout=0.2, socket_connect_timeout=0.2)
    breaker = make_breaker(tenant, "crm", client=client)
    private.stop()
    from pipeline.breakers.storage import RedisBreakerStorage

    RedisBreakerStorage._last_outage_log = 0.0
    with structlog.testing.capture_logs() as logs:
        assert breaker.call(lambda: "still served") == "still served"
        with pytest.raises(VendorServerError):  # the vendor's error, not Redis's
            breaker.call(fail())
    assert any(entry["event"] == "breaker.redis_unavailable" for entry in logs)


def test_breaker_for_is_the_process_wide_factory(tenant: int) -> None:
    assert breaker_for(tenant, "crm") is breaker_for(tenant, "crm")
    assert breaker_for(tenant, "crm") is not breaker_for(tenant, "lusha")
    assert breaker_for(tenant, "crm").fail_max == get_settings().cb_error_threshold
